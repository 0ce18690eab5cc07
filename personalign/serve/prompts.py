"""How a served request becomes the prompt text the model was trained on (docs/formats.md, "Views and templates").

The server renders one view (`none`, `persona` or `pba`) with one template. The user's
conditioning text comes from the body field `persona` (persona view) or `profile` (pba view),
or else from the conversation's system message. With conditioning, the last user message is the
task and the prompt is exactly what `personalign.views.templates.render_prompt` builds for
training; earlier turns (chat template only) are kept between the system and the final user
message. Without conditioning, a chat goes through the chat template as it is.
"""
from __future__ import annotations

from typing import Any

from personalign.views.templates import apply_chat, build_prompt, render_prompt

VIEW_FIELD = {"persona": "persona", "pba": "profile"}


class PromptError(ValueError):
    """A request that cannot be rendered under the server's view and template (answered with HTTP 400)."""


def conditioning(view: str, persona: str | None, profile: str | None) -> str | None:
    """The conditioning text from the body fields, checked against the server's view."""
    given = {"persona": persona, "profile": profile}
    for name, value in given.items():
        if value is not None and VIEW_FIELD.get(view) != name:
            expected = f"send `{VIEW_FIELD[view]}` instead" if view in VIEW_FIELD else "it takes no user conditioning"
            raise PromptError(f"this server renders the {view!r} view: `{name}` is not used ({expected})")
    return given[VIEW_FIELD[view]] if view in VIEW_FIELD else None


def render_chat(
    messages: list[dict[str, str]], view: str, template: str, tokenizer: Any, block: str | None = None
) -> str:
    """Prompt text for a chat request; `block` is the body's persona/profile (None: take the system message)."""
    if not messages:
        raise PromptError("`messages` is empty")
    turns = list(messages)
    if view != "none" and block is None and turns[0]["role"] == "system":
        block = turns.pop(0)["content"]
    if not turns or turns[-1]["role"] != "user":
        raise PromptError("the last message must come from the user")
    task = turns[-1]["content"]
    conditioned = view != "none" and bool(block and block.strip())
    if template == "chat":
        if not conditioned:
            return apply_chat(turns, tokenizer)
        return build_prompt(template, view, task, block or "", tokenizer=tokenizer, earlier=turns[:-1]).text
    if len(turns) > 1 or turns[0]["role"] != "user":
        raise PromptError(f"the {template!r} template takes one user message (plus an optional system message)")
    return render_prompt(template, view if conditioned else "none", task, block or "", tokenizer=tokenizer)


def render_completion(prompt: str, view: str, template: str, tokenizer: Any, block: str | None) -> str:
    """Prompt text for a completions request: the raw prompt, or with conditioning the prompt as the task."""
    if view == "none" or block is None:
        return prompt
    return render_prompt(template, view, prompt, block, tokenizer=tokenizer)

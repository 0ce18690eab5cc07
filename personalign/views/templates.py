"""Prompt templates: how a task and a view's conditioning text become one prompt string.

Presets (the prompt always ends where the response starts):

* ``chat`` (default): a system message and a user message ``# Task\\n{task}\\n\\n# User history\\n...``
  (headers ``# User preferences``, ``# User persona``, ``# About the user`` for the other views),
  rendered by the tokenizer's own chat template with ``add_generation_prompt=True``. The view
  ``none`` (and any view whose conditioning is empty) is the bare task as the only user message.
  Without a tokenizer, or with one that has no chat template, the messages are written in ChatML
  (``<|im_start|>role\\n...<|im_end|>\\n`` then ``<|im_start|>assistant\\n``), the format of the
  default SmolLM2 model's template (which, unlike this fallback, adds a default system message
  when a conversation has none). A task that is an HH-RLHF dialogue ("Human: …\\n\\nAssistant: …",
  see `personalign.records.dialogue`) is written as real chat turns: the earlier turns as user and
  assistant messages (after the system message), the last user turn in the task's place.
* ``alignx``: the AlignXpert training layout of AlignX ``train/format_data.py``
  (github.com/JinaLeejnl/AlignX), Llama-3 header tokens written out as text, with the
  ``<|begin_of_text|>`` that AlignX's evaluation scripts prepend as a token.
* ``alignx-eval``: the layout of AlignX's released evaluation scripts ``eval/loss_ica.py`` and
  ``eval/loss_pba.py``: task as ``**Post:**\\n{task}``, ICA history under one header
  ``***Historical Behavior and User Preferences***`` followed by the demographic text.
* ``plain``: ``Prompt: {task}\\nPersona: {persona}\\nResponse:`` (``Prompt: {task}\\nResponse:`` for
  ``none``), from persona-tailoring ``persona_tailoring/model/prompt_loader.py``
  (github.com/nbalepur/persona-anon).
* ``hh``: raw HH-RLHF text as ScalingAlignment trains and scores it (``training/utils/
  data_manager.py``): ``\n\nHuman: {task}\n\nAssistant:`` (a task that already is such a dialogue,
  as ScalingAlignment's ``prefix`` becomes, as it is); each response joins the prompt after one
  space and is tokenized with it, and gets no EOS (`response_convention`).

History items are written the AlignX way in every template (see `history_text`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from personalign.records.dialogue import dialogue_messages, looks_like_dialogue
from personalign.records.schema import Comment, Pair

ViewName = Literal["none", "ica", "pba", "persona", "demo"]
TemplateName = Literal["chat", "alignx", "alignx-eval", "plain", "hh", "raw"]
SUPPORTED: dict[str, tuple[str, ...]] = {  # the views each template can render
    "chat": get_args(ViewName),
    "alignx": ("none", "ica", "pba", "demo"),
    "alignx-eval": ("none", "ica", "pba", "demo"),
    "plain": ("none", "persona"),
    "hh": ("none",),
    "raw": ("none",),  # the prompt exactly as given: data already rendered (TRL's standard format)
}
# How responses follow the prompt, per template: (joiner, EOS). A joiner means each response is
# tokenized together with the prompt (prompt + joiner + response) and its ids are what follows the
# prompt's; None means responses are tokenized on their own. EOS False: no EOS after a response.
RESPONSE_CONVENTIONS: dict[str, tuple[str | None, bool]] = {"hh": (" ", False)}


def response_convention(template: str) -> tuple[str | None, bool]:
    """(joiner, EOS) of `template`'s responses (default: tokenized alone, EOS appended)."""
    return RESPONSE_CONVENTIONS.get(template, (None, True))

SYSTEM = {
    "ica": "Generate a task-specific response based on user historical behavior.",
    "pba": "Generate a task-specific response based on user preferences.",
    "persona": "Generate a task-specific response tailored to the user's persona.",
    "demo": "Generate a task-specific response based on information about the user.",
}
SYSTEM_ALIGNX_EVAL = "Generate a task-specific response based on user historical behavior and preferences."
CHAT_HEADERS = {
    "ica": "# User history",
    "pba": "# User preferences",
    "persona": "# User persona",
    "demo": "# About the user",
}
LLAMA3 = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{system}\n<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n{user}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>"
)


def history_text(ugc: Sequence[Comment], pairs: Sequence[Pair]) -> str:
    """UGC then past pairs, numbered per section, exactly as AlignX writes them (each item ends in a blank line)."""
    out = ""
    if ugc:
        out += "**This person has commented on some posts:**\n\n"
        for i, c in enumerate(ugc, 1):
            out += f"{i}. *Post:*\n{c.prompt}\n\n*Comment:*\n{c.comment}\n\n"
    if pairs:
        out += "**This person has chosen or rejected comments on some posts:**\n\n"
        for i, p in enumerate(pairs, 1):
            out += f"{i}. *Post:*\n{p.prompt}\n\n*Chosen:*\n{p.chosen}\n\n*Rejected:*\n{p.rejected}\n\n"
    return out


def check_view(template: str, view: str) -> None:
    """Refuse a view the template cannot render (ValueError naming the views it can)."""
    if view not in SUPPORTED.get(template, ()):
        supported = ", ".join(SUPPORTED.get(template, ()))
        raise ValueError(f"template {template!r} does not support view {view!r}; it supports {supported}")


@dataclass(frozen=True, slots=True)
class Prompt:
    """A rendered prompt: its text, and for the ``chat`` template the messages the text was rendered
    from (the tokenizer's chat template, or ChatML), so a chat backend gets the messages themselves."""

    text: str
    messages: list[dict[str, str]] | None = None


def build_prompt(
    template: str, view: str, task: str, block: str = "", demographic: str | None = None, tokenizer: Any = None,
    *, persona_in_system: bool = False, earlier: Sequence[dict[str, str]] = (),
) -> Prompt:
    """Render one prompt.

    `block` is the view's conditioning text (history text for ica, profile for pba, persona,
    demographic text for demo); `demographic` is appended to the ica history. `tokenizer` only
    matters for ``chat``. `persona_in_system` (chat, persona view) writes the persona into the
    system message and leaves the bare task as the user message; `earlier` (chat) are conversation
    turns before the task, placed after the system message.
    """
    check_view(template, view)
    if template == "chat":
        messages = chat_messages(view, task, block, demographic, persona_in_system=persona_in_system, earlier=earlier)
        return Prompt(apply_chat(messages, tokenizer), messages)
    return Prompt(_text_prompt(template, view, task, block, demographic))


def render_prompt(
    template: str, view: str, task: str, block: str = "", demographic: str | None = None, tokenizer: Any = None,
    *, persona_in_system: bool = False,
) -> str:
    """The text of `build_prompt`."""
    return build_prompt(template, view, task, block, demographic, tokenizer, persona_in_system=persona_in_system).text


def _text_prompt(template: str, view: str, task: str, block: str, demographic: str | None) -> str:
    """The prompt text of the templates that are not chat (`plain`, `alignx`, `alignx-eval`, `hh`, `raw`)."""
    if template == "raw":
        return task
    if template == "plain":
        persona = f"\nPersona: {block}" if view == "persona" else ""
        return f"Prompt: {task}{persona}\nResponse:"
    if template == "hh":
        text = task if looks_like_dialogue(task) else f"\n\nHuman: {task}"
        return text if text.endswith("\n\nAssistant:") else text + "\n\nAssistant:"
    body = {"none": "", "ica": block + (demographic or ""), "pba": block, "demo": block}[view]
    if template == "alignx":
        system = SYSTEM["pba" if view == "pba" else "ica"]
        header = "***User Preferences***" if view == "pba" else "***Historical Behavior***"
        task_part = f"{task}\n\n"
    else:
        system = SYSTEM["pba"] if view == "pba" else SYSTEM_ALIGNX_EVAL
        header = "***User Preferences***" if view == "pba" else "***Historical Behavior and User Preferences***"
        task_part = f"**Post:**\n{task}\n\n"
    user = f"***Task***\n\n{task_part}{header}\n\n{body}\n\n***Response:***\n\n"
    return LLAMA3.format(system=system, user=user)


SYSTEM_PERSONA = "You are talking with this user: {persona} Tailor your response to them."


def plain_shot(task: str, persona: str, response: str) -> str:
    """One few-shot exemplar in the `plain` persona layout, ending in a blank line."""
    return f"Prompt: {task}\nPersona: {persona}\nResponse: {response}\n\n"


def chat_messages(view: str, task: str, block: str = "", demographic: str | None = None,
                  *, persona_in_system: bool = False, earlier: Sequence[dict[str, str]] = ()) -> list[dict[str, str]]:
    """System + user messages for the chat preset; the bare task when there is no conditioning text.
    `earlier` turns, then those of a dialogue task, come before the user message, which holds the
    task's last turn."""
    earlier = list(earlier)
    turns = dialogue_messages(task)
    if turns is not None:
        *before, last = turns
        earlier += before
        task = last["content"]
    if persona_in_system and view == "persona" and block.strip():
        return [{"role": "system", "content": SYSTEM_PERSONA.format(persona=block.strip())}, *earlier,
                {"role": "user", "content": task}]
    sections = [(CHAT_HEADERS[view], block)] if view != "none" else []
    if view == "ica":
        sections.append((CHAT_HEADERS["demo"], demographic or ""))
    sections = [(head, text.strip()) for head, text in sections if text and text.strip()]
    if not sections:
        return [*earlier, {"role": "user", "content": task}]
    user = "\n\n".join([f"# Task\n{task}", *(f"{head}\n{text}" for head, text in sections)])
    return [{"role": "system", "content": SYSTEM[view]}, *earlier, {"role": "user", "content": user}]


def apply_chat(messages: list[dict[str, str]], tokenizer: Any = None) -> str:
    """The tokenizer's chat template with a generation prompt, or ChatML when there is none."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


LLAMA3_HEADER = "<|start_header_id|>"


def template_warning(template: str, tokenizer: Any) -> str | None:
    """A warning when an `alignx` layout (Llama-3 header tokens written as text) meets a tokenizer
    that does not have those tokens: the text is then split into ordinary pieces."""
    if template not in ("alignx", "alignx-eval") or tokenizer is None:
        return None
    ids = tokenizer.convert_tokens_to_ids([LLAMA3_HEADER])
    if ids and ids[0] is not None and ids[0] != getattr(tokenizer, "unk_token_id", None):
        return None
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    return (f"template {template!r} writes Llama-3's header tokens as text, but the tokenizer ({name}) is not "
            "Llama-3's: they become ordinary pieces; use template 'chat' for this model")

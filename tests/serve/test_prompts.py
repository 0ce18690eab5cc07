"""Served prompts are the training prompts of the view and template (personalign.views.templates)."""
from __future__ import annotations

import pytest

from personalign.serve.prompts import PromptError, conditioning, render_chat, render_completion
from personalign.views.templates import apply_chat, render_prompt

TASK = "Write a poem about the sea."
USER = {"role": "user", "content": TASK}


def test_plain_template_uses_the_persona_tailoring_layout():
    persona = "The user loves rhymes."
    assert render_chat([USER], "persona", "plain", None, persona) == f"Prompt: {TASK}\nPersona: {persona}\nResponse:"
    assert render_chat([{"role": "system", "content": persona}, USER], "persona", "plain", None) == (
        f"Prompt: {TASK}\nPersona: {persona}\nResponse:"
    )
    assert render_chat([USER], "persona", "plain", None) == f"Prompt: {TASK}\nResponse:"
    with pytest.raises(PromptError, match="one user message"):
        render_chat([USER, {"role": "assistant", "content": "a"}, USER], "persona", "plain", None, persona)


def test_pba_profile_and_multi_turn_chat():
    profile = "concise, formal"
    assert render_chat([USER], "pba", "chat", None, profile) == render_prompt("chat", "pba", TASK, profile)
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    prompt = render_chat([*history, USER], "pba", "chat", None, profile)
    assert prompt.index("# User preferences") > prompt.index("Hello!") > prompt.index("Generate a task-specific")
    assert render_completion(TASK, "pba", "chat", None, profile) == render_prompt("chat", "pba", TASK, profile)


def test_view_none_passes_conversations_through():
    messages = [{"role": "system", "content": "Be brief."}, USER]
    assert render_chat(messages, "none", "chat", None) == apply_chat(messages)
    assert render_completion("raw text", "none", "chat", None, None) == "raw text"


def test_conditioning_fields_must_fit_the_view():
    assert conditioning("persona", "p", None) == "p"
    assert conditioning("pba", None, "q") == "q"
    assert conditioning("none", None, None) is None
    with pytest.raises(PromptError, match="send `persona`"):
        conditioning("persona", None, "q")
    with pytest.raises(PromptError, match="no user conditioning"):
        conditioning("none", "p", None)

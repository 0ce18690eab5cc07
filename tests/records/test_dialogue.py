from __future__ import annotations

import pytest

from personalign.curate.synth import synth_ranking
from personalign.records.dialogue import Dialogue, DialogueError, dialogue_messages, parse_dialogue, render_dialogue
from personalign.records.schema import Example
from personalign.testing import tiny_tokenizer
from personalign.views.build import ViewConfig, build_view
from personalign.views.templates import render_prompt

HH = "\n\nHuman: Can you help me bake bread?\n\nAssistant: Sure. What kind?\n\nHuman: Sourdough,\n\nplease.\n\nAssistant:"


def test_parse_hh_turns():
    d = parse_dialogue(HH)
    assert d.lead == "\n\n" and d.is_open
    assert d.turns == [
        {"role": "user", "content": "Can you help me bake bread?"},
        {"role": "assistant", "content": "Sure. What kind?"},
        {"role": "user", "content": "Sourdough,\n\nplease."},
        {"role": "assistant", "content": ""},
    ]
    assert d.history == d.turns[:-1]


@pytest.mark.parametrize("text", [
    HH,
    HH.removesuffix("\n\nAssistant:"),
    "Human: hi\n\nAssistant: hello\n\nHuman:  two spaces and a trailing newline\n",
    "\n\nHuman: only one turn\n\nAssistant:",
    "Human: a: b\n\n\n\nAssistant: c\n\n",
])
def test_round_trip(text):
    assert render_dialogue(parse_dialogue(text)) == text


def test_synth_dialogue_prompts_are_well_formed():
    prompts = [r["prompt"] for r in synth_ranking(200, seed=0) if r["prompt"].startswith("Human:")]
    assert prompts
    for p in prompts:
        d = parse_dialogue(p)
        assert render_dialogue(d) == p
        assert [t["role"] for t in d.turns] == ["user", "assistant", "user"]


@pytest.mark.parametrize(("text", "position", "message"), [
    ("Hello there", 0, "expected 'Human: ' or 'Assistant: '"),
    ("\n\nHuman: hi\n\nAssistant:there", 23, "expected a space after 'Assistant:'"),
    ("Human: hi\n\nAssistant: \n\nHuman: x", 21, "expected a space and text after 'Assistant:'"),
    ("Human: hi\n\nHuman:", 17, "only the final turn may be a bare 'Assistant:'"),
    ("\n\n\n\nHuman: hi", 2, "expected 'Human: ' or 'Assistant: '"),
])
def test_malformed_names_the_position(text, position, message):
    with pytest.raises(DialogueError, match=f"at character {position}: .*{message}") as info:
        parse_dialogue(text)
    assert info.value.position == position


def test_render_rejects_bad_turns():
    with pytest.raises(ValueError, match="turn 1: unknown role 'system'"):
        render_dialogue(Dialogue([{"role": "system", "content": "x"}]))
    with pytest.raises(ValueError, match="turn 1: empty content"):
        render_dialogue(Dialogue([{"role": "user", "content": ""}, {"role": "assistant", "content": "x"}]))


def test_dialogue_messages_only_for_dialogues_that_end_with_the_user():
    assert dialogue_messages(HH) == parse_dialogue(HH).history
    assert dialogue_messages("Human: hi\n\nAssistant: hello") is None
    assert dialogue_messages("Human: hi\n\nAssistant:x") is None  # malformed: rendered as plain text
    assert dialogue_messages("What is Human: nature?\n\nAssistant: no") is None


def test_chat_template_renders_earlier_turns_as_messages():
    tok = tiny_tokenizer()
    ex = Example(HH, ["Start with a starter.", "No."])
    prompt = build_view(ex, ViewConfig(view="none"), tok).prompt
    assert prompt == tok.apply_chat_template(parse_dialogue(HH).history, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>user\nSourdough,\n\nplease.<|im_end|>\n<|im_start|>assistant\n")
    assert "Human:" not in prompt
    persona = render_prompt("chat", "persona", HH, "The user bakes at weekends.")
    assert persona == (
        "<|im_start|>system\nGenerate a task-specific response tailored to the user's persona.<|im_end|>\n"
        "<|im_start|>user\nCan you help me bake bread?<|im_end|>\n"
        "<|im_start|>assistant\nSure. What kind?<|im_end|>\n"
        "<|im_start|>user\n# Task\nSourdough,\n\nplease.\n\n# User persona\nThe user bakes at weekends.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # other templates keep the text as it is
    assert render_prompt("plain", "none", HH) == f"Prompt: {HH}\nResponse:"

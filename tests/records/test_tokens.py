"""BOS per the tokenizer's own convention, never twice (a Llama-style tokenizer and a ChatML one)."""
from __future__ import annotations

import pytest
import torch

from personalign.models.scorer import score_responses
from personalign.records.schema import Comment, Example, UserContext
from personalign.records.tokens import bos_to_add, prompt_ids, tokenize_pair
from personalign.testing import BEGIN_OF_TEXT, tiny_causal_lm, tiny_tokenizer
from personalign.views.build import ViewConfig, build_view


@pytest.fixture(scope="module")
def llama_style():
    return tiny_tokenizer(adds_bos=True)


@pytest.fixture(scope="module")
def chatml():
    return tiny_tokenizer()


def test_the_fixture_tokenizers_differ_in_convention(llama_style, chatml):
    bos = llama_style.convert_tokens_to_ids(BEGIN_OF_TEXT)
    assert llama_style("hello")["input_ids"][0] == bos
    assert chatml("hello")["input_ids"] == chatml("hello", add_special_tokens=False)["input_ids"]
    assert bos_to_add(llama_style) == bos and bos_to_add(chatml) is None


def test_prompt_gets_one_bos_where_the_tokenizer_adds_it(llama_style, chatml):
    bos = llama_style.bos_token_id
    plain = build_view(Example("Explain tides.", ["a", "b"]), ViewConfig(template="plain")).prompt
    ids = prompt_ids(llama_style, plain)
    assert ids[0] == bos and ids.count(bos) == 1
    assert ids[1:] == llama_style(plain, add_special_tokens=False)["input_ids"]
    assert prompt_ids(chatml, plain) == chatml(plain, add_special_tokens=False)["input_ids"]


def test_alignx_templates_write_bos_as_text_and_get_no_second_one(llama_style):
    ex = Example("Hi?", ["a", "b"], user=UserContext(ugc=[Comment("P", "C")]))
    for template in ("alignx", "alignx-eval"):
        text = build_view(ex, ViewConfig(view="ica", template=template)).prompt
        assert text.startswith(BEGIN_OF_TEXT)
        ids = prompt_ids(llama_style, text)
        assert ids[0] == llama_style.bos_token_id and ids.count(llama_style.bos_token_id) == 1


def test_scoring_includes_bos_and_matches_a_plain_forward(llama_style):
    model, tok = tiny_causal_lm(llama_style)
    prompt, responses = "Prompt: Which answer?\nResponse:", [" The first.", " The second one."]
    tokens = tokenize_pair(tok, prompt, responses)
    assert tokens.prompt_ids[0] == tok.bos_token_id
    [scores] = score_responses(model, tok, [(prompt, responses)])
    for response, got in zip(responses, scores.logp):
        p = [tok.bos_token_id, *tok(prompt, add_special_tokens=False)["input_ids"]]
        r = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        with torch.no_grad():
            logits = model(torch.tensor([p + r])).logits[0].log_softmax(-1)
        expected = sum(logits[len(p) - 1 + i, t].item() for i, t in enumerate(r))
        assert got == pytest.approx(expected, abs=1e-4)


def test_length_budget_counts_the_bos(llama_style):
    ex = Example("Q?", ["a", "b"], user=UserContext(ugc=[Comment(f"post {i}", "comment " * 5) for i in range(6)]))
    for max_length in (60, 90, 140):
        r = build_view(ex, ViewConfig(view="ica", max_length=max_length), llama_style)
        longest = max(len(llama_style(x, add_special_tokens=False)["input_ids"]) for x in r.responses)
        assert len(prompt_ids(llama_style, r.prompt)) + longest + 1 <= max_length or r.overlong


def test_generation_prompt_carries_the_bos(llama_style, chatml):
    from personalign.llm.base import GenerationConfig
    from personalign.llm.local import LocalBackend

    prompt = "Prompt: Which answer?\nResponse:"
    n = len(llama_style(prompt, add_special_tokens=False)["input_ids"])
    for tok, expected in ((llama_style, n + 1), (chatml, len(chatml(prompt, add_special_tokens=False)["input_ids"]))):
        model, tok = tiny_causal_lm(tok)
        [done] = LocalBackend(model, tok).complete([prompt], GenerationConfig(max_new_tokens=2))
        assert done.prompt_tokens == expected


@pytest.mark.parametrize("adds_bos", [False, True])
def test_max_prompt_tokens_keeps_the_last_n_prompt_tokens_after_bos(adds_bos):
    """AlignX's evaluation: `truncation_side="left"` to 7679 tokens, then BOS in front; responses whole."""
    tok = tiny_tokenizer(adds_bos=adds_bos)
    prompt = "Post one about food. " * 20 + "The task at the end."
    plain = tok(prompt, add_special_tokens=False)["input_ids"]
    t = tokenize_pair(tok, prompt, ["A long answer " * 10, "No."], max_prompt_tokens=12)
    assert t.prompt_ids == ([tok.bos_token_id] if adds_bos else []) + plain[-12:]
    assert t.prompt_cut == len(plain) - 12 and t.response_cut == 0
    assert t.response_ids[0] == tok("A long answer " * 10, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    short = tokenize_pair(tok, "Hi.", ["a"], max_prompt_tokens=12)
    bos = [tok.bos_token_id] if adds_bos else []
    assert short.prompt_cut == 0 and short.prompt_ids == bos + tok("Hi.", add_special_tokens=False)["input_ids"]

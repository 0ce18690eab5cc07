from __future__ import annotations

import pytest
import torch

from personalign.models.loading import load_model
from personalign.models.logprobs import (
    length_batches,
    pack_batch,
    packed_logprobs,
)
from personalign.models.scorer import score_responses
from personalign.records.tokens import tokenize_pair
from personalign.testing import tiny_causal_lm

ATOL = 1e-4


def chat_prompt(tok, text: str) -> str:
    return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)


def naive_logps(model, tok, prompt: str, responses: list[str]) -> torch.Tensor:
    """Reference: one plain forward per (prompt, response), full logits, log_softmax, sum.

    log_softmax runs in float64: in float32 over SmolLM2's 49k vocab it drifts ~2e-5 per token,
    more than the engine's logsumexp (which stays within ~1e-6 of float64).
    """
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    sums = []
    for response in responses:
        resp_ids = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        logits = model(torch.tensor([prompt_ids + resp_ids])).logits[0]
        logp = torch.log_softmax(logits.double(), dim=-1)[len(prompt_ids) - 1 : -1].float()
        sums.append(logp.gather(-1, torch.tensor(resp_ids)[:, None]).sum())
    return torch.stack(sums)


def engine_logps(model, tok, items, **kw) -> list[torch.Tensor]:
    batch = pack_batch([tokenize_pair(tok, p, rs) for p, rs in items])
    sums, counts = packed_logprobs(model, batch, **kw)
    return [sums[i, : len(rs)] for i, (_, rs) in enumerate(items)], counts


ITEMS = [
    ("Tell me a joke about cats.", ["Why did the cat sit on the computer? To watch the mouse!", "No.", "Cats."]),
    ("What is the capital of France? Answer briefly, please.", ["Paris.", "It is Paris, known for art and food."]),
    ("Hi", ["Hello! How can I help you today with your garden, budget or recipe?"]),
]


def rendered(tok, items):
    return [(chat_prompt(tok, p), rs) for p, rs in items]


def test_tokenize_pair_appends_eos_and_adds_no_special_tokens(tiny_lm):
    _, tok = tiny_lm
    prompt = chat_prompt(tok, "Hi there")
    t = tokenize_pair(tok, prompt, ["Hello!", "Go away."])
    assert t.prompt_ids == tok(prompt, add_special_tokens=False)["input_ids"]
    assert t.prompt_ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 3
    assert [r[-1] for r in t.response_ids] == [tok.eos_token_id] * 2
    assert tok.decode(t.response_ids[1][:-1]) == "Go away."
    assert not t.truncated and t.packed_length == len(t.prompt_ids) + sum(map(len, t.response_ids))


def test_tokenize_pair_truncates_prompt_left_first_then_responses(tiny_lm):
    _, tok = tiny_lm
    prompt = "one two three four five six seven eight nine ten " * 4
    full = tokenize_pair(tok, prompt, ["short", "a bit longer answer"])
    longest = max(map(len, full.response_ids))
    cut = tokenize_pair(tok, prompt, ["short", "a bit longer answer"], max_length=longest + 10)
    assert cut.prompt_ids == full.prompt_ids[-10:]
    assert cut.prompt_cut == len(full.prompt_ids) - 10 and cut.response_cut == 0
    assert cut.response_ids == full.response_ids and cut.truncated

    long_response = "word " * 40
    both = tokenize_pair(tok, prompt, [long_response, "ok"], max_length=20)
    assert len(both.prompt_ids) == 10 and both.prompt_ids == full.prompt_ids[-10:]
    assert len(both.response_ids[0]) == 10 and both.response_ids[1][-1] == tok.eos_token_id
    assert both.response_cut == len(tokenize_pair(tok, prompt, [long_response]).response_ids[0]) - 10

    short_prompt = tokenize_pair(tok, "Hi", [long_response], max_length=20)
    assert short_prompt.prompt_cut == 0 and len(short_prompt.prompt_ids) + len(short_prompt.response_ids[0]) == 20


def test_tokenize_pair_rejects_unscorable_input(tiny_lm):
    _, tok = tiny_lm
    with pytest.raises(ValueError, match="at least one response"):
        tokenize_pair(tok, "Hi", [])
    with pytest.raises(ValueError, match="prompt is empty"):
        tokenize_pair(tok, "", ["Hello"])


def test_pack_batch_layout(tiny_lm):
    _, tok = tiny_lm
    t = tokenize_pair(tok, "Hi there", ["Hello!", "No."])
    p, (r1, r2) = len(t.prompt_ids), map(len, t.response_ids)
    b = pack_batch([t, tokenize_pair(tok, "Hi", ["Yes"])])
    assert b.input_ids.shape == (2, p + r1 + r2)
    assert b.position_ids[0].tolist() == [*range(p), *range(p, p + r1), *range(p, p + r2)]
    assert b.segment_ids[0].tolist() == [0] * p + [1] * r1 + [2] * r2
    assert (b.segment_ids[1] == -1).sum() == p + r1 + r2 - b.n_tokens[1].sum() - 2
    assert b.n_tokens.tolist() == [[r1, r2], [b.n_tokens[1, 0].item(), 0]]
    first = b.slots == 0
    assert b.pred_cols[first].tolist() == [p - 1, *range(p, p + r1 - 1)]
    second = b.slots == 1
    assert b.pred_cols[second].tolist() == [p - 1, *range(p + r1, p + r1 + r2 - 1)]


def test_length_batches_respects_budget_and_covers_all(tiny_lm):
    _, tok = tiny_lm
    examples = [tokenize_pair(tok, "word " * n, ["ok"]) for n in (3, 30, 7, 12, 1, 60, 5)]
    batches = length_batches([e.packed_length for e in examples], max_tokens_per_batch=64, batch_size=3)
    assert sorted(i for b in batches for i in b) == list(range(len(examples)))
    for b in batches:
        longest = max(examples[i].packed_length for i in b)
        assert len(b) <= 3 and (len(b) == 1 or len(b) * longest <= 64)
    assert [5] in batches  # longer than the budget: alone


def test_parity_padded_path(tiny_lm):
    model, tok = tiny_lm
    items = [(p, rs[:1]) for p, rs in rendered(tok, ITEMS)]
    with torch.no_grad():
        got, _ = engine_logps(model, tok, items)
        for (p, rs), g in zip(items, got):
            torch.testing.assert_close(g, naive_logps(model, tok, p, rs), atol=ATOL, rtol=0)
    assert len({len(tokenize_pair(tok, p, rs).prompt_ids) for p, rs in items}) == 3


@pytest.mark.parametrize("k", [2, 3])
def test_parity_shared_prefix_packed(tiny_lm, k):
    model, tok = tiny_lm
    items = [(p, rs[:k]) for p, rs in rendered(tok, ITEMS)]
    with torch.no_grad():
        got, counts = engine_logps(model, tok, items)
        for i, ((p, rs), g) in enumerate(zip(items, got)):
            torch.testing.assert_close(g, naive_logps(model, tok, p, rs), atol=ATOL, rtol=0)
            assert (counts[i, len(rs) :] == 0).all()


@pytest.mark.parametrize("chunk_size", [5, None], ids=["chunked", "whole-head"])
def test_parity_chunked_path(tiny_lm, chunk_size):
    model, tok = tiny_lm
    items = rendered(tok, ITEMS)
    with torch.no_grad():
        got, counts = engine_logps(model, tok, items, chunk_size=chunk_size)
        assert counts.sum() > 5
        for (p, rs), g in zip(items, got):
            torch.testing.assert_close(g, naive_logps(model, tok, p, rs), atol=ATOL, rtol=0)


@pytest.mark.parametrize("arch", ["qwen2", "gemma2"])
def test_parity_other_architectures(arch):
    model, tok = tiny_causal_lm(arch=arch)
    items = rendered(tok, ITEMS)
    with torch.no_grad():
        got, _ = engine_logps(model, tok, items, chunk_size=7)
        for (p, rs), g in zip(items, got):
            torch.testing.assert_close(g, naive_logps(model, tok, p, rs), atol=ATOL, rtol=0)


@pytest.mark.parametrize(("activation_checkpointing", "chunk_size"), [(False, 6), (True, 6), (False, None)],
                         ids=["chunked", "chunked-checkpointed", "whole-head"])
def test_gradients_match_naive_path(activation_checkpointing, chunk_size):
    model, tok = tiny_causal_lm(seed=1)
    model.train()
    if activation_checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
    items = rendered(tok, ITEMS)
    got, _ = engine_logps(model, tok, items, chunk_size=chunk_size)
    torch.stack([g.sum() for g in got]).sum().backward()
    engine_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    torch.stack([naive_logps(model, tok, p, rs).sum() for p, rs in items]).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(engine_grads[n], p.grad, atol=1e-4, rtol=1e-4, msg=n)
    assert any(g.abs().sum() > 0 for g in engine_grads.values())


def test_peft_lora_model_parity_and_gradients():
    from peft import LoraConfig, get_peft_model

    base, tok = tiny_causal_lm(seed=2)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    items = rendered(tok, ITEMS[:2])
    got, _ = engine_logps(model, tok, items)
    for (p, rs), g in zip(items, got):
        with torch.no_grad():
            torch.testing.assert_close(g, naive_logps(model, tok, p, rs), atol=ATOL, rtol=0)
    torch.stack([g.sum() for g in got]).sum().backward()
    lora_grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert lora_grads and all(g is not None and g.abs().sum() > 0 for g in lora_grads)


def test_score_responses_restores_input_order_across_batches(tiny_lm):
    model, tok = tiny_lm
    items = rendered(tok, ITEMS) * 2
    one_batch = score_responses(model, tok, items, max_tokens_per_batch=100_000, progress=False)
    many = score_responses(model, tok, items, max_tokens_per_batch=64, batch_size=2, progress=False)
    for (p, rs), a, b in zip(items, one_batch, many):
        assert len(a.logp) == len(rs) and a.n_tokens == b.n_tokens
        assert a.logp == pytest.approx(b.logp, abs=ATOL)
        assert a.avg_logp == pytest.approx([s / n for s, n in zip(a.logp, a.n_tokens)])
        with torch.no_grad():
            assert a.logp == pytest.approx(naive_logps(model, tok, p, rs).tolist(), abs=ATOL)


def test_score_responses_marks_truncation_and_keeps_training_mode():
    model, tok = tiny_causal_lm()
    model.train()
    prompt = chat_prompt(tok, "word " * 50)
    scores = score_responses(model, tok, [(prompt, ["ok"]), ("Hi", ["ok"])], max_length=20, progress=False)
    assert [s.truncated for s in scores] == [True, False]
    assert model.training


def test_bfloat16_scores_close_to_float32(tiny_lm):
    model, tok = tiny_lm
    bf16, _ = tiny_causal_lm()
    bf16.to(torch.bfloat16)
    items = rendered(tok, ITEMS)
    ref = score_responses(model, tok, items, progress=False)
    got = score_responses(bf16, tok, items, progress=False)
    for a, b in zip(ref, got):
        assert b.logp == pytest.approx(a.logp, rel=2e-2)


def test_parity_default_model(default_model_dir):
    model, tok = load_model(default_model_dir)
    items = [
        (chat_prompt(tok, "Give me one tip for learning to cook."), ["Start with simple recipes.", "Buy a wok."]),
        (chat_prompt(tok, "What is the capital of France?"), ["The capital of France is Paris."]),
    ]
    with torch.no_grad():
        got, _ = engine_logps(model, tok, items, chunk_size=4)
        for (p, rs), g in zip(items, got):
            torch.testing.assert_close(g, naive_logps(model, tok, p, rs), atol=ATOL, rtol=0)


def _flex_and_plain(seed: int = 2):
    flex, tok = tiny_causal_lm(seed=seed)
    plain, _ = tiny_causal_lm(seed=seed)
    flex.set_attn_implementation("flex_attention")
    return flex, plain, tok


@pytest.mark.duration(17)
def test_flex_attention_block_mask_matches_separate_forwards():
    """The mask-free path: the model on flex_attention with the packed block mask scores like one
    plain forward per (prompt, response) under sdpa."""
    flex, plain, tok = _flex_and_plain()
    items = rendered(tok, ITEMS)
    with torch.no_grad():
        got, _ = engine_logps(flex, tok, items, chunk_size=6)
        for (p, rs), g in zip(items, got):
            torch.testing.assert_close(g, naive_logps(plain, tok, p, rs), atol=ATOL, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flex attention has no backward pass on CPU (torch 2.13)")
def test_flex_attention_gradients_match_separate_forwards():
    flex, plain, tok = _flex_and_plain()
    flex, plain = flex.cuda().train(), plain.cuda().train()
    items = rendered(tok, ITEMS)
    batch = pack_batch([tokenize_pair(tok, p, rs) for p, rs in items]).to("cuda")
    sums, _ = packed_logprobs(flex, batch, chunk_size=6)
    sums.sum().backward()
    total = 0
    for p, rs in items:
        prompt_ids = tok(p, add_special_tokens=False)["input_ids"]
        for r in rs:
            ids = prompt_ids + tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            logits = plain(torch.tensor([ids], device="cuda")).logits[0, len(prompt_ids) - 1 : -1].float()
            total = total + logits.log_softmax(-1).gather(1, torch.tensor(ids[len(prompt_ids):], device="cuda")[:, None]).sum()
    total.backward()
    for (name, a), (_, b) in zip(flex.named_parameters(), plain.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-4, msg=name)

"""LocalBackend: batched left-padded generation equals one-at-a-time; stops, sampling seeds, rendering."""
from __future__ import annotations

import pytest

from personalign.llm import BackendConfig, GenerationConfig, make_backend
from personalign.llm.local import MIN_SHARED_PREFIX, LocalBackend, _common_prefix, cut_at_stop
from personalign.models.loading import load_model

REQUESTS = [
    "Hello there",
    [{"role": "user", "content": "Tell me a joke about cats."}],
    "The user asked for a short answer, and the assistant gave a long one. A good response",
    "Write a poem",
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}],
    "x",
    "Some people prefer direct answers with clear steps; others enjoy stories",
]


def _one_at_a_time(backend: LocalBackend, requests, cfg):
    return [backend.complete([r], cfg)[0] for r in requests]


def _transformers_greedy(model, tok, requests, max_new_tokens: int) -> list[str]:
    """The reference: `model.generate`, one unpadded request at a time."""
    texts = []
    for r in requests:
        prompt = r if isinstance(r, str) else tok.apply_chat_template(r, tokenize=False, add_generation_prompt=True)
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        out = model.generate(ids, attention_mask=ids.new_ones(ids.shape), max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        texts.append(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
    return texts


def test_batched_greedy_equals_one_at_a_time(tiny_lm):
    model, tok = tiny_lm
    cfg = GenerationConfig(max_new_tokens=10)
    batched = LocalBackend(model, tok, batch_size=3).complete(REQUESTS, cfg)
    assert batched == _one_at_a_time(LocalBackend(model, tok, batch_size=1), REQUESTS, cfg)
    assert len({c.text for c in batched}) > 1  # different prompts, different outputs: order is checked
    assert all(c.completion_tokens <= 10 for c in batched)
    assert [c.prompt_tokens for c in batched] == [len(tok(LocalBackend(model, tok).render(r))["input_ids"]) for r in REQUESTS]


def test_greedy_matches_transformers_generate(tiny_lm):
    model, tok = tiny_lm
    ours = LocalBackend(model, tok, batch_size=4).generate(REQUESTS, GenerationConfig(max_new_tokens=12), progress=False)
    assert ours == _transformers_greedy(model, tok, REQUESTS, 12)


def test_shared_prefix_batches_match_transformers_generate(tiny_lm):
    model, tok = tiny_lm
    stem = "Which answer do you prefer, the first or the second? The user asked for a short answer"
    requests = [stem, stem + ", and the assistant", stem + " about cats.", stem + " today"]
    requests += [[{"role": "user", "content": stem + suffix}] for suffix in ("", " now", " about the sea, please")]
    ids = tok([LocalBackend(model, tok).render(r) for r in requests[:4]], add_special_tokens=False)["input_ids"]
    assert _common_prefix(ids) >= MIN_SHARED_PREFIX and _common_prefix(ids) == min(map(len, ids)) - 1
    for batch_size in (4, 7):
        ours = LocalBackend(model, tok, batch_size=batch_size).generate(requests, GenerationConfig(max_new_tokens=12), progress=False)
        assert ours == _transformers_greedy(model, tok, requests, 12)


def test_stop_string_cuts_the_text_and_ends_generation_early(tiny_lm):
    backend = LocalBackend(*tiny_lm, batch_size=4)
    free = backend.complete(REQUESTS, GenerationConfig(max_new_tokens=16))
    stop = free[2].text[4:7]
    stopped = backend.complete(REQUESTS, GenerationConfig(max_new_tokens=16, stop=[stop]))
    for before, after in zip(free, stopped):
        expected, hit = cut_at_stop(before.text, [stop])
        assert after.text == expected
        assert after.finish_reason == ("stop" if hit else before.finish_reason)
    assert stopped[2].completion_tokens < free[2].completion_tokens


def test_sampling_is_reproducible_with_a_seed(tiny_lm):
    backend = LocalBackend(*tiny_lm, batch_size=4)
    cfg = GenerationConfig(max_new_tokens=12, temperature=1.0, seed=7)
    first = backend.generate(REQUESTS, cfg, progress=False)
    assert backend.generate(REQUESTS, cfg, progress=False) == first
    assert backend.generate(REQUESTS, cfg.model_copy(update={"seed": 8}), progress=False) != first
    greedy = backend.generate(REQUESTS, GenerationConfig(max_new_tokens=12), progress=False)
    assert greedy != first
    nucleus_of_one = cfg.model_copy(update={"top_p": 1e-6})
    assert backend.generate(REQUESTS, nucleus_of_one, progress=False) == greedy



@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_interleaved_batches_decode_as_each_would_alone(tiny_lm, temperature):
    """Steps of several batches taken in turn (as the server schedules them) give each batch the tokens it
    gets when run alone: every batch holds its own cache and its own seeded generator."""
    backend = LocalBackend(*tiny_lm, batch_size=2)
    cfg = GenerationConfig(max_new_tokens=9, temperature=temperature, seed=3)
    parts = backend.decodings(REQUESTS, cfg)
    assert len(parts) == 4 and sorted(i for indices, _ in parts for i in indices) == list(range(len(REQUESTS)))
    running = [decoding for _, decoding in parts]
    while running:
        running = [d for d in running if d.step()]
    for indices, decoding in parts:
        alone = backend.complete([REQUESTS[i] for i in indices], cfg)
        assert decoding.completions() == alone
    assert not parts[0][1].step()  # a finished batch stays finished

def test_rendering_chat_and_raw_requests(tiny_lm):
    model, tok = tiny_lm
    backend = LocalBackend(model, tok)
    chat = REQUESTS[4]
    assert backend.render(chat) == tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert backend.render(chat).endswith("<|im_start|>assistant\n")
    assert backend.render("raw text") == "raw text"
    assert backend.generate([], GenerationConfig(), progress=False) == []
    with pytest.raises(ValueError, match="empty prompts"):
        backend.generate(["fine", ""], GenerationConfig(), progress=False)


def test_make_backend_loads_a_model_directory(tiny_model_dir):
    backend = make_backend(BackendConfig(kind="local", model=str(tiny_model_dir), batch_size=2))
    assert isinstance(backend, LocalBackend) and backend.batch_size == 2
    assert backend.identity == make_backend(BackendConfig(model=str(tiny_model_dir))).identity
    texts = backend.generate(REQUESTS[:3], GenerationConfig(max_new_tokens=4), progress=False)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    with pytest.raises(ValueError, match="kind='local'"):
        LocalBackend.from_config(BackendConfig(kind="openai", model="x"))


def test_embedded_model_batched_greedy_equals_one_at_a_time(default_model_dir):
    model, tok = load_model(default_model_dir)
    requests = [
        [{"role": "user", "content": "Describe a person who prefers short answers."}],
        [{"role": "user", "content": "Hi"}],
        [{"role": "user", "content": "Why is the sky blue? Answer for a child."}],
        [{"role": "system", "content": "You answer in one sentence."}, {"role": "user", "content": "Why?"}],
        "The capital of France is",
    ]
    backend = LocalBackend(model, tok, batch_size=3)
    chats = tok([backend.render(r) for r in requests[:3]], add_special_tokens=False)["input_ids"]
    assert _common_prefix(chats) >= MIN_SHARED_PREFIX  # the first batch shares the default system turn
    batched = backend.generate(requests, GenerationConfig(max_new_tokens=12), progress=False)
    assert batched == _transformers_greedy(model, tok, requests, 12)
    assert all(text.strip() for text in batched)


def test_top_k_sampling_draws_only_from_the_k_most_likely_tokens():
    import torch

    from personalign.llm.base import GenerationConfig
    from personalign.llm.local import _next_tokens

    logits = torch.tensor([[5.0, 4.0, 3.0, 2.9, 2.8, 0.0]]).repeat(2000, 1)
    drawn = _next_tokens(logits, GenerationConfig(temperature=1.0, top_k=2, seed=0))
    assert set(drawn.tolist()) == {0, 1}
    drawn = _next_tokens(logits, GenerationConfig(temperature=5.0, top_k=0))
    assert len(set(drawn.tolist())) == 6  # no cut: every token appears at a high temperature
    # top_k then top_p: of the 3 kept tokens, the nucleus 0.5 keeps only the first
    drawn = _next_tokens(logits, GenerationConfig(temperature=1.0, top_k=3, top_p=0.5))
    assert set(drawn.tolist()) == {0}

"""Collators: records -> token ids once -> packed batches (one prompt pass per example)."""
from __future__ import annotations

import json

import pytest
import torch

from personalign.data.views import ViewConfig
from personalign.models.logprobs import Tokenized, packed_logprobs, tokenize_pair
from personalign.train.collate import TrainItem, collate, load_items

PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_pair_shares_one_prompt(tiny_lm):
    _, tok = tiny_lm
    items = [
        TrainItem(tokenize_pair(tok, PROMPT, ["Paris.", "I do not know."]), ref_logps=(-3.0, -7.5)),
        TrainItem(tokenize_pair(tok, "<|im_start|>user\nHi<|im_end|>\n", ["Hello!", "Go away."]),
                  ref_logps=(-1.0, -2.0)),
    ]
    batch = collate(items)
    for row, it in enumerate(items):
        t = it.tokens
        expected = t.prompt_ids + t.response_ids[0] + t.response_ids[1]
        assert batch.packed.input_ids[row, : len(expected)].tolist() == expected
        assert (batch.packed.segment_ids[row] == 0).sum() == len(t.prompt_ids)  # the prompt appears once
        assert batch.packed.n_tokens[row].tolist() == [len(r) for r in t.response_ids]
    assert batch.ref_logps.tolist() == [[-3.0, -7.5], [-1.0, -2.0]]
    assert batch.rewards is None


def test_rankings_of_any_length_score_like_separate_forwards(tiny_lm):
    model, tok = tiny_lm
    rankings = [["Paris is the capital.", "Paris.", "Lyon?", "I do not know."], ["Paris.", "Rome."]]
    rewards = [(3.0, 2.0, 1.0, 0.0), (1.0, -1.0)]
    items = [TrainItem(tokenize_pair(tok, PROMPT, r), rewards=w) for r, w in zip(rankings, rewards)]
    batch = collate(items)
    assert batch.rewards.tolist() == [[3.0, 2.0, 1.0, 0.0], [1.0, -1.0, 0.0, 0.0]]
    assert batch.packed.n_tokens[1, 2:].tolist() == [0, 0]
    with torch.no_grad():
        logps, n_tokens = packed_logprobs(model, batch.packed)
        for row, it in enumerate(items):
            p = it.tokens.prompt_ids
            for j, ids in enumerate(it.tokens.response_ids):
                logits = model(torch.tensor([p + ids])).logits[0, len(p) - 1 : -1].float()
                separate = logits.log_softmax(-1).gather(1, torch.tensor(ids)[:, None]).sum()
                torch.testing.assert_close(logps[row, j], separate, atol=1e-4, rtol=0)
    assert logps[1, 2:].tolist() == [0.0, 0.0]


def test_batch_with_and_without_rewards_is_an_error():
    tokens = Tokenized([1, 2], [[3, 4], [5, 6]])
    with pytest.raises(ValueError, match="rewards are given for some"):
        collate([TrainItem(tokens, rewards=(1.0, 0.0)), TrainItem(tokens)])


def test_load_items_renders_tokenizes_and_checks_response_counts(tiny_lm, tmp_path):
    _, tok = tiny_lm
    records = [{"prompt": f"Question {i}?", "chosen": "A kind answer.", "rejected": "A rude answer.",
                "Demographic Information": f"The user is {20 + i} years old."} for i in range(5)]
    pairs = write_jsonl(tmp_path / "pairs.jsonl", records)
    view = ViewConfig(view="demo")

    items, counts = load_items(pairs, view, tok, loss="dpo", max_length=64, limit=3)
    assert counts["records"] == len(items) == 3
    first = items[0].tokens
    assert "years old" in tok.decode(first.prompt_ids)
    assert tok.decode(first.response_ids[0]) == "A kind answer." + tok.eos_token
    assert tok.decode(first.response_ids[1]) == "A rude answer." + tok.eos_token

    sft, _ = load_items(pairs, view, tok, loss="sft", max_length=64, best_only=True)
    assert len(sft) == 5 and all(len(it.tokens.response_ids) == 1 for it in sft)

    ranking = write_jsonl(tmp_path / "ranking.jsonl", [{"prompt": "Q?", "responses": ["a b", "c", "d e f"],
                                                        "rewards": [0.5, 2.0, 1.0]}])
    with pytest.raises(ValueError, match="exactly 2 responses"):
        load_items(ranking, view, tok, loss="dpo", max_length=64)
    (pro,), _ = load_items(ranking, view, tok, loss="pro", max_length=64)
    assert pro.rewards == (2.0, 1.0, 0.5)  # the reader sorts best first
    assert [tok.decode(r[:-1]) for r in pro.tokens.response_ids] == ["c", "d e f", "a b"]


def test_load_items_fits_history_to_max_length(tiny_lm, tmp_path):
    _, tok = tiny_lm
    ugc = [{"prompt": f"Post number {i} about cooking and travel.", "comment": "I love this, " * 8} for i in range(4)]
    path = write_jsonl(tmp_path / "ica.jsonl", [{"prompt": "Any tips?", "chosen": "Yes.", "rejected": "No.",
                                                 "User-Generated Content": ugc}])
    (item,), counts = load_items(path, ViewConfig(view="ica"), tok, loss="dpo", max_length=160)
    assert counts["view_history_dropped"] > 0  # the view dropped old items ...
    assert not item.tokens.truncated  # ... so the tokenizer did not have to cut anything
    assert item.tokens.packed_length - len(item.tokens.response_ids[1]) <= 160

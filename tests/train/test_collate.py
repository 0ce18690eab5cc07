"""Collators: records -> token store once -> packed batches (one prompt pass per example)."""
from __future__ import annotations

import json

import pytest
import torch

from personalign.models.logprobs import packed_logprobs
from personalign.records.errors import RecordError
from personalign.tokenstore.store import load_store
from personalign.train.collate import collate, rewards_tensor, store_spec
from personalign.views.build import ViewConfig

PLAIN = ViewConfig(template="plain")


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def store_of(tmp_path, records, tok, *, loss="dpo", view=PLAIN, max_length=64, **kw):
    path = write_jsonl(tmp_path / f"{loss}-{len(records)}.jsonl", records)
    store, _ = load_store(path, store_spec(view, loss=loss, max_length=max_length, **kw), tok, progress=False)
    return store


def test_pair_shares_one_prompt(tiny_lm, tmp_path):
    _, tok = tiny_lm
    store = store_of(tmp_path, [{"prompt": "What is the capital of France?", "chosen": "Paris.",
                                 "rejected": "I do not know."},
                                {"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}], tok)
    ref = torch.tensor([[-3.0, -7.5], [-1.0, -2.0]])
    batch = collate(store, [1, 0], ref)
    for row, t in enumerate(store.examples([1, 0])):
        expected = t.prompt_ids + t.response_ids[0] + t.response_ids[1]
        assert batch.packed.input_ids[row, : len(expected)].tolist() == expected
        assert (batch.packed.segment_ids[row] == 0).sum() == len(t.prompt_ids)  # the prompt appears once
        assert batch.packed.n_tokens[row].tolist() == [len(r) for r in t.response_ids]
    assert batch.ref_logps.tolist() == [[-1.0, -2.0], [-3.0, -7.5]]
    assert batch.rewards is None


def test_rankings_of_any_length_score_like_separate_forwards(tiny_lm, tmp_path):
    model, tok = tiny_lm
    rankings = [["Paris is the capital.", "Paris.", "Lyon?", "I do not know."], ["Paris.", "Rome."]]
    rewards = [[3.0, 2.0, 1.0, 0.0], [1.0, -1.0]]
    store = store_of(tmp_path, [{"prompt": "What is the capital of France?", "responses": r, "rewards": w}
                                for r, w in zip(rankings, rewards)], tok, loss="pro")
    batch = collate(store, [0, 1])
    assert batch.rewards.tolist() == [[3.0, 2.0, 1.0, 0.0], [1.0, -1.0, 0.0, 0.0]]
    assert batch.packed.n_tokens[1, 2:].tolist() == [0, 0]
    with torch.no_grad():
        logps, n_tokens = packed_logprobs(model, batch.packed)
        for row, t in enumerate(store.examples([0, 1])):
            p = t.prompt_ids
            for j, ids in enumerate(t.response_ids):
                logits = model(torch.tensor([p + ids])).logits[0, len(p) - 1 : -1].float()
                separate = logits.log_softmax(-1).gather(1, torch.tensor(ids)[:, None]).sum()
                torch.testing.assert_close(logps[row, j], separate, atol=1e-4, rtol=0)
    assert logps[1, 2:].tolist() == [0.0, 0.0]


def test_batch_with_and_without_rewards_is_an_error():
    with pytest.raises(ValueError, match="rewards are given for some"):
        rewards_tensor([[1.0, 0.0], None], 2)


def test_store_renders_tokenizes_and_checks_response_counts(tiny_lm, tmp_path):
    _, tok = tiny_lm
    records = [{"prompt": f"Question {i}?", "chosen": "A kind answer.", "rejected": "A rude answer.",
                "Demographic Information": f"The user is {20 + i} years old."} for i in range(5)]
    view = ViewConfig(view="demo")
    store = store_of(tmp_path, records, tok, view=view, limit=3)
    assert store.counts["records"] == len(store) == 3
    first = store.examples([0])[0]
    assert "years old" in tok.decode(first.prompt_ids)
    assert tok.decode(first.response_ids[0]) == "A kind answer." + tok.eos_token
    assert tok.decode(first.response_ids[1]) == "A rude answer." + tok.eos_token

    sft = store_of(tmp_path, records, tok, view=view, loss="sft")
    assert len(sft) == 5 and all(len(t.response_ids) == 1 for t in sft.examples(range(5)))

    ranking = [{"prompt": "Q?", "responses": ["a b", "c", "d e f"], "rewards": [0.5, 2.0, 1.0]}]
    with pytest.raises(RecordError, match=r"dpo-1.jsonl:1: field 'responses': the objective needs exactly 2"):
        store_of(tmp_path, ranking, tok, view=view, loss="dpo")
    pro = store_of(tmp_path, ranking, tok, view=view, loss="pro")
    assert pro.rewards([0]) == [[2.0, 1.0, 0.5]]  # the reader sorts best first
    assert [tok.decode(r[:-1]) for r in pro.examples([0])[0].response_ids] == ["c", "d e f", "a b"]


def test_skip_counts_records_the_objective_cannot_use(tiny_lm, tmp_path):
    _, tok = tiny_lm
    records = [{"prompt": "Q?", "chosen": "yes", "rejected": "no"},
               {"prompt": "Q?", "responses": ["a", "b", "c"], "rewards": [3, 2, 1]},
               {"prompt": "Q?", "chosen": 5, "rejected": "no"}]
    store = store_of(tmp_path, records, tok, on_invalid="skip")
    assert len(store) == 1 and store.counts["rejected"] == 2
    assert store.counts["rejected_by_field"] == {"chosen": 1, "responses": 1}
    rejects = [json.loads(line) for line in (tmp_path / "dpo-3.rejects.jsonl").read_text().splitlines()]
    assert sorted((r["line"], r["field"]) for r in rejects) == [(2, "responses"), (3, "chosen")]


def test_store_fits_history_to_max_length(tiny_lm, tmp_path):
    _, tok = tiny_lm
    ugc = [{"prompt": f"Post number {i} about cooking and travel.", "comment": "I love this, " * 8} for i in range(4)]
    store = store_of(tmp_path, [{"prompt": "Any tips?", "chosen": "Yes.", "rejected": "No.",
                                 "User-Generated Content": ugc}], tok, view=ViewConfig(view="ica"), max_length=160)
    (item,) = store.examples([0])
    assert store.counts["view_history_dropped"] > 0  # the view dropped old items ...
    assert not item.truncated  # ... so the tokenizer did not have to cut anything
    assert item.packed_length - len(item.response_ids[1]) <= 160


def test_kto_rows_score_the_previous_records_first_response_as_the_kl_partner(tiny_lm, tmp_path):
    """TRL's KTOTrainer builds the KL estimate from mismatched pairs: row i's prompt with row i − 1's
    completion (wrapping around); the hand-tokenized responses say which one each row got."""
    from personalign.train.collate import KtoRows

    _, tok = tiny_lm
    records = [{"prompt": f"Question {i}?", "chosen": f"Answer number {i}.", "rejected": "No."} for i in range(3)]
    rows = KtoRows(store_of(tmp_path, records, tok, loss="kto"))
    first = [tok(f"Answer number {i}.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for i in range(3)]
    for i, ex in enumerate(rows.examples([0, 1, 2])):
        assert ex.response_ids[0] == first[i] and ex.response_ids[-1] == first[(i - 1) % 3]
    assert rows.rewards([0, 2]) == [[1.0, 0.0], [1.0, 0.0]]  # a pair: the first desirable, the second not

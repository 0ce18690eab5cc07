"""The token store: built once, keyed by everything that decides its token ids, read per batch."""
from __future__ import annotations

import json

import numpy as np
import pytest

from personalign.records.io import read_examples
from personalign.testing import tiny_tokenizer
from personalign.tokenstore.store import META_FILE, StoreSpec, build_token_store, open_store, store_path
from personalign.views.build import ViewConfig, build_view

ICA = ViewConfig(view="ica", template="alignx")


def records(n: int) -> list[dict]:
    return [{"prompt": f"Question {i}: what should I cook tonight?", "chosen": f"A warm soup, friend {i}.",
             "rejected": "Nothing.", "User-Generated Content": [
                 {"prompt": f"Post {j} about food", "comment": "I like spicy dishes. " * (1 + j % 3)}
                 for j in range(i % 5)]} for i in range(n)]


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records(40)))
    return path


def test_rows_are_the_view_rendered_and_tokenized(data):
    tok = tiny_tokenizer()
    store, hit = build_token_store(data, tok, StoreSpec(ICA, 400, need="pair"), progress=False)
    assert not hit and len(store) == 40
    # expected ids built by hand from the tokenizer (not by the store's `tokenize_pair`): the prompt with the
    # tokenizer's own special tokens, each response without, then EOS; nothing here is long enough to cut
    eos = tok.eos_token_id
    expected, view = [], ICA.model_copy(update={"max_length": 400})  # the store fits history to its max_length
    for i, (rec, ex) in enumerate(zip(records(40), read_examples(data))):
        prompt = build_view(ex, view, tok, i).prompt
        assert rec["prompt"] in prompt
        responses = [tok(r, add_special_tokens=False)["input_ids"] + [eos] for r in (rec["chosen"], rec["rejected"])]
        expected.append((tok(prompt)["input_ids"], responses))
    got = store.examples([5, 0, 39])
    assert [(t.prompt_ids, t.response_ids) for t in got] == [expected[5], expected[0], expected[39]]
    assert all(t.prompt_cut == 0 and t.response_cut == 0 for t in store.examples(range(40)))
    lengths = [len(p) + sum(map(len, rs)) for p, rs in expected]
    assert store.packed_lengths.tolist() == lengths
    assert store.column("source")[3].endswith("pairs.jsonl:4")
    c = store.counts
    assert (c["records"], c["tokens"], c["rejected"]) == (40, sum(lengths), 0)
    assert c["prompt_tokens"] + c["response_tokens"] == c["tokens"]


def test_parallel_build_writes_the_same_store(data, tmp_path, monkeypatch):
    from personalign.tokenstore import store as store_module

    monkeypatch.setattr(store_module, "_CHUNK", 7)  # six chunks over two workers, written back in order
    tok = tiny_tokenizer()
    spec = StoreSpec(ICA, 400, need="pair")
    serial, _ = build_token_store(data, tok, spec, progress=False)
    copy = tmp_path / "copy" / "pairs.jsonl"
    copy.parent.mkdir()
    copy.write_bytes(data.read_bytes())
    parallel, _ = build_token_store(copy, tok, spec, num_proc=2, progress=False)
    n = len(serial)
    assert len(parallel) == n
    assert parallel.examples(range(n)) == serial.examples(range(n))
    assert {k: v for k, v in parallel.counts.items()} == serial.counts


def test_store_is_found_again_and_keyed_by_what_decides_its_tokens(data):
    tok = tiny_tokenizer()
    spec = StoreSpec(ICA, 400, need="pair")
    first, _ = build_token_store(data, tok, spec, progress=False)
    again, hit = build_token_store(data, tok, spec, progress=False)
    assert hit and again.path == first.path
    others = [StoreSpec(ICA, 300, need="pair"), StoreSpec(ICA.model_copy(update={"seed": 1, "sample_history": True}),
                                                         400, need="pair"),
              StoreSpec(ViewConfig(view="none", template="alignx"), 400, need="pair"), StoreSpec(ICA, 400, limit=10),
              StoreSpec(ICA, 400, responses="best"), StoreSpec(ICA, 400, on_invalid="skip")]
    paths = {store_path(data, tok, s) for s in others} | {first.path, store_path(data, tiny_tokenizer(adds_bos=True),
                                                                                   spec)}
    assert len(paths) == len(others) + 2
    data.write_text(data.read_text().replace("Nothing.", "No idea."))
    assert store_path(data, tok, spec) != first.path


def test_an_unfinished_store_is_rebuilt(data):
    tok = tiny_tokenizer()
    spec = StoreSpec(ICA, 400)
    store, _ = build_token_store(data, tok, spec, progress=False)
    (store.path / META_FILE).unlink()  # a build killed before its last write
    assert open_store(store.path) is None
    rebuilt, hit = build_token_store(data, tok, spec, progress=False)
    assert not hit and len(rebuilt) == 40


def test_memory_mapped_rows_are_read_per_batch(data):
    store, _ = build_token_store(data, tiny_tokenizer(), StoreSpec(ICA, 400), progress=False)
    assert store.num_responses.tolist() == [2] * 40 and store.width == 2
    assert not np.any(store.truncated())
    assert store.rewards([0, 1]) == [None, None]

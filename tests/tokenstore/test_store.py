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


# Builds with 4-record chunks and 12-record parts, and dies by SIGKILL right after its second part.
KILLED_BUILD = """
import os, signal, sys
from personalign.testing import tiny_tokenizer
from personalign.tokenstore import store
from personalign.views.build import ViewConfig

store._CHUNK, store._PART = 4, 12
real, closed = store._Part.close, []

def close(self):
    done = real(self)
    closed.append(done)
    if len(closed) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return done

store._Part.close = close
spec = store.StoreSpec(ViewConfig(view="ica", template="alignx"), 400, need="pair")
store.build_token_store(sys.argv[1], tiny_tokenizer(), spec, progress=False)
"""


def test_a_killed_build_resumes_with_only_the_missing_parts_and_equals_an_uninterrupted_one(data, tmp_path,
                                                                                           monkeypatch):
    """SIGKILL after two of four parts: the rerun tokenizes only records 24..39 (the parts on disk are
    kept), and its rows and counts equal those of an uninterrupted build of the same records."""
    import signal
    import subprocess
    import sys

    from personalign.tokenstore import store as store_module

    killed = subprocess.run([sys.executable, "-c", KILLED_BUILD, str(data)], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    spec, tok = StoreSpec(ICA, 400, need="pair"), tiny_tokenizer()
    partial = store_path(data, tok, spec).with_name(store_path(data, tok, spec).name + ".partial")
    assert sorted(p.name for p in partial.glob("part-*")) == [
        "part-00000.arrow", "part-00000.json", "part-00001.arrow", "part-00001.json"]

    monkeypatch.setattr(store_module, "_CHUNK", 4)
    monkeypatch.setattr(store_module, "_PART", 12)
    tokenized, real = [], store_module._tokenize_chunk
    monkeypatch.setattr(store_module, "_tokenize_chunk", lambda chunk: tokenized.extend(i for i, _ in chunk)
                        or real(chunk))
    resumed, hit = build_token_store(data, tok, spec, progress=False)
    assert not hit and tokenized == list(range(24, 40)) and not partial.exists()

    copy = tmp_path / "copy" / "pairs.jsonl"
    copy.parent.mkdir()
    copy.write_bytes(data.read_bytes())
    whole, _ = build_token_store(copy, tok, spec, progress=False)
    assert len(resumed) == len(whole) == 40
    assert resumed.examples(range(40)) == whole.examples(range(40))
    assert resumed.packed_lengths.tolist() == whole.packed_lengths.tolist()
    assert [s.rpartition(":")[2] for s in resumed.column("source")] == [str(i) for i in range(1, 41)]
    assert resumed.counts == whole.counts

from __future__ import annotations

import json
from collections import Counter

import pytest

from personalign.curate.stats import LengthStats, compute_stats, percentiles
from personalign.records.dimensions import load_dimensions
from personalign.records.io import read_examples


def direction(**values: float) -> list[float]:
    vec = [0.5] * 90
    for key, v in values.items():
        vec[int(key[1:])] = v
    return vec


RECORDS = [
    {"prompt": "p" * 10, "chosen": "c" * 20, "rejected": "r" * 5, "Preference Direction": direction(d16=1, d73=0),
     "Demographic Information": "A 30-year-old nurse.",
     "User-Generated Content": [{"prompt": "post", "comment": "nice"}] * 2,
     "Pair-wise Comparative Feedback": [{"prompt": "q", "chosen": "a", "rejected": "b"}]},
    {"prompt": "p" * 30, "chosen": "c" * 40, "rejected": "r" * 15, "Preference Direction": direction(d16=1),
     "Pair-wise Comparative Feedback": [{"prompt": "q", "chosen": "a", "rejected": "b"}] * 4},
    {"prompt": "p" * 20, "responses": ["aaa", "bb", "c"], "rewards": [1, 3, 2]},
    {"prompt": "p" * 50, "chosen": "c" * 10, "rejected": "r" * 10, "profile": "Likes humor",
     "chosen_persona_gold": "The user likes jokes."},
]


@pytest.fixture
def crafted(tmp_path):
    path = tmp_path / "crafted.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return path


class WordTokenizer:
    """One token per whitespace-separated word; records how it was called."""

    def __init__(self):
        self.calls = []

    def __call__(self, texts, add_special_tokens=True):
        assert add_special_tokens is False
        self.calls.append(len(texts))
        return {"input_ids": [t.split() for t in texts]}


def test_percentiles_are_exact_nearest_rank():
    assert percentiles(Counter(range(1, 101))) == LengthStats(5, 50, 95, 100, 50.5)
    assert percentiles(Counter({7: 3})) == LengthStats(7, 7, 7, 7, 7.0)
    assert percentiles(Counter({1: 1, 100: 19})) == LengthStats(1, 100, 100, 100, 95.05)
    assert percentiles(Counter()) == LengthStats(0, 0, 0, 0, 0.0)


def test_stats_of_a_crafted_file(crafted, dimensions_path):
    s = compute_stats(read_examples(crafted))
    assert s.records == 4
    assert s.chars["prompt"] == LengthStats(10, 20, 50, 50, 27.5)
    # the ranking record counts its best ("bb") and worst ("aaa", after sorting by reward) response
    assert s.chars["chosen"] == LengthStats(2, 10, 40, 40, 18.0)
    assert s.chars["rejected"] == LengthStats(3, 5, 15, 15, 8.25)
    assert s.tokens is None
    assert s.responses == {2: 3, 3: 1} and s.with_rewards == 1
    assert s.ugc_per_record == {0: 3, 2: 1}
    assert s.pairs_per_record == {0: 2, 1: 1, 4: 1}
    assert (s.with_demographic, s.with_direction, s.with_profile, s.with_personas) == (1, 2, 1, 1)
    assert s.slices == {"none": 2, "all": 1, "pairs": 1}
    dims = load_dimensions(dimensions_path)
    assert [(d.index, d.ones, d.zeros, d.used) for d in s.dimensions] == [(16, 2, 0, 2), (73, 0, 1, 1)]
    assert (s.dimensions[0].positive, s.dimensions[1].negative) == (dims[16].positive, dims[73].negative)
    out = json.loads(json.dumps(s.to_dict()))
    assert out["chars"]["prompt"]["p95"] == 50 and out["dimensions"][0]["used"] == 2


def test_token_lengths_are_batched(tmp_path):
    recs = [{"prompt": " ".join(["w"] * (i + 1)), "chosen": "a b", "rejected": "c"} for i in range(5)]
    path = tmp_path / "words.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    tok = WordTokenizer()
    s = compute_stats(read_examples(path), tok, batch_size=2)
    assert tok.calls == [6, 6, 3]  # 3 fields x 2 records, twice, then the last record
    assert s.tokens["prompt"] == LengthStats(1, 3, 5, 5, 3.0)
    assert s.tokens["chosen"] == LengthStats(2, 2, 2, 2, 2.0)
    assert s.chars["prompt"] == LengthStats(1, 5, 9, 9, 5.0)


def test_stats_stream_without_materializing(crafted):
    """compute_stats takes a one-shot iterator and does not need the records afterwards."""
    it = iter(list(read_examples(crafted)) * 250)
    s = compute_stats(it)
    assert s.records == 1000 and next(it, None) is None
    assert s.chars["prompt"] == LengthStats(10, 20, 50, 50, 27.5)

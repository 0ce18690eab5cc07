from __future__ import annotations

import statistics
from collections import Counter

import pytest

from personalign.curate.synth import CONCISE, MAX_RANKING_K, STYLE, synth_ranking, synth_records
from personalign.records.io import ReadCounts, read_examples, write_jsonl
from personalign.records.schema import DEMOGRAPHIC, DIRECTION, PAIRS, UGC
from personalign.views.profile import profile_values

N = 1000
MARKERS = {text: (d, side) for d, banks in STYLE.items() for side, bank in zip((1, 0), banks) for text in bank}


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return list(synth_records(N, seed=7))


def marks(text: str) -> set[tuple[int, int]]:
    """(dimension, side) realizations present in a reply."""
    return {m for s, m in MARKERS.items() if s in text}


def history_vectors(rec: dict) -> list[list[float]]:
    return [it[DIRECTION] for key in (UGC, PAIRS) for it in rec[key]]


def test_deterministic_in_the_seed():
    assert list(synth_records(30, seed=1)) == list(synth_records(30, seed=1))
    assert list(synth_records(30, seed=1)) != list(synth_records(30, seed=2))
    assert list(synth_ranking(30, seed=1)) == list(synth_ranking(30, seed=1))
    assert list(synth_ranking(30, seed=1)) != list(synth_ranking(30, seed=2))


def test_every_record_validates(tmp_path, records):
    path = tmp_path / "synth.jsonl"
    assert write_jsonl(records[:300], path) == 300
    counts = ReadCounts()
    examples = list(read_examples(path, on_invalid="skip", counts=counts))
    assert (counts.accepted, counts.rejected) == (300, 0)
    assert all(ex.user.slice == "all" and len(ex.user.ugc) == 4 and len(ex.user.pairs) == 4 for ex in examples)
    rec = records[0]
    assert set(rec) == {"prompt", "chosen", "rejected", DIRECTION, DEMOGRAPHIC, UGC, PAIRS}
    assert set(rec[UGC][0]) == {"prompt", "comment", DIRECTION}
    assert set(rec[PAIRS][0]) == {"prompt", "chosen", "rejected", DIRECTION}


def test_history_size_options():
    rec = next(synth_records(1, seed=0, ugc_per_user=2, pairs_per_user=0))
    assert len(rec[UGC]) == 2 and rec[PAIRS] == []


def test_user_vectors_are_sparse_and_balanced(records):
    active = [[v for v in r[DIRECTION] if v != 0.5] for r in records]
    assert all(4 <= len(a) <= 10 for a in active)
    ones = sum(v == 1 for a in active for v in a) / sum(map(len, active))
    assert 0.47 < ones < 0.53


def test_history_vectors_are_noisy_copies_of_the_user_vector(records):
    agree = total = spurious = neutral = 0
    for r in records:
        user = r[DIRECTION]
        for vec in history_vectors(r):
            for u, v in zip(user, vec):
                if u != 0.5:
                    total += 1
                    agree += v == u
                else:
                    neutral += 1
                    spurious += v != 0.5
    assert 0.7 < agree / total < 0.8
    assert spurious / neutral < 0.01


def test_pba_profile_from_history_recovers_the_user(records):
    recovered = active = emitted = right = 0
    for r in records:
        user, prof = r[DIRECTION], profile_values(history_vectors(r))
        act = [i for i, u in enumerate(user) if u != 0.5]
        active += len(act)
        recovered += sum(prof[i] == user[i] for i in act)
        shown = [i for i, p in enumerate(prof) if p != 0.5]
        emitted += len(shown)
        right += sum(prof[i] == user[i] for i in shown)
    assert recovered / active > 0.95
    assert right / emitted > 0.98


def test_replies_differ_along_the_users_dimensions(records):
    for r in records:
        pairs = [(r["chosen"], r["rejected"])] + [(p["chosen"], p["rejected"]) for p in r[PAIRS]]
        assert all(c != j for c, j in pairs)
        user = r[DIRECTION]
        for d, side in marks(r["chosen"]):
            assert user[d] == side
        for d, side in marks(r["rejected"]):
            assert user[d] == 1 - side


def test_learning_signal_needs_the_user(records):
    """Scoring replies by agreement with the PBA profile of the user's history picks the chosen one;
    a user-blind scorer (how often each realization was chosen in a training half) is at chance."""
    train, test = records[: N // 2], records[N // 2 :]
    chosen_rate = Counter()
    seen = Counter()
    for r in train:
        for m in marks(r["chosen"]):
            chosen_rate[m] += 1
            seen[m] += 1
        for m in marks(r["rejected"]):
            seen[m] += 1

    def blind(text: str) -> float:
        return sum((chosen_rate[m] + 1) / (seen[m] + 2) - 0.5 for m in marks(text))

    def aware(text: str, prof: list[float]) -> int:
        return sum(1 if prof[d] == side else -1 for d, side in marks(text) if prof[d] != 0.5)

    aware_ok = blind_ok = 0.0
    for r in test:
        prof = profile_values(history_vectors(r))
        aware_ok += aware(r["chosen"], prof) > aware(r["rejected"], prof)
        a, b = blind(r["chosen"]), blind(r["rejected"])
        blind_ok += 1.0 if a > b else 0.5 if a == b else 0.0
    assert aware_ok / len(test) > 0.9
    assert 0.42 < blind_ok / len(test) < 0.58


def test_style_alone_does_not_predict_chosen(records):
    """Each realization (and the concise/detailed length contrast) sits in the chosen reply about
    half the time, because half the users prefer each side."""
    in_chosen = Counter()
    total = Counter()
    for r in records:
        for text, is_chosen in ((r["chosen"], 1), (r["rejected"], 0)):
            for d, side in marks(text):
                in_chosen[side] += is_chosen
                total[side] += 1
    for side in (0, 1):
        assert 0.45 < in_chosen[side] / total[side] < 0.55
    longer = sum(len(r["chosen"]) > len(r["rejected"]) for r in records) / N
    assert 0.44 < longer < 0.56
    concise = [r for r in records if r[DIRECTION][CONCISE] != 0.5]
    short_chosen = [len(r["chosen"]) < len(r["rejected"]) for r in concise if len(r["chosen"]) != len(r["rejected"])]
    assert 0.35 < sum(short_chosen) / len(short_chosen) < 0.65


def test_texts_are_varied(records):
    assert len({r["prompt"] for r in records}) > 150
    lengths = [len(r["chosen"]) for r in records]
    assert statistics.pstdev(lengths) > 60 and max(lengths) > 3 * min(lengths)
    assert len({r[DEMOGRAPHIC] for r in records}) > N * 0.9
    assert len({it["comment"] for r in records for it in r[UGC]}) > 1000


def test_ranking_records(tmp_path):
    recs = list(synth_ranking(40, k=5, seed=3))
    for r in recs:
        assert len(r["responses"]) == len(set(r["responses"])) == 5
        assert all(a > b for a, b in zip(r["rewards"], r["rewards"][1:]))
        assert len(r["responses"][0]) > len(r["responses"][1]) > len(r["responses"][2])
    write_jsonl(recs, tmp_path / "rank.jsonl")
    examples = list(read_examples(tmp_path / "rank.jsonl"))
    assert [ex.responses for ex in examples] == [r["responses"] for r in recs]
    with pytest.raises(ValueError, match="k must be"):
        next(synth_ranking(1, k=MAX_RANKING_K + 1))

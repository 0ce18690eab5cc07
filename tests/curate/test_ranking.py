from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from personalign.cli import app
from personalign.curate.ranking import equal_budget_subsets, file_sha256, pick_records, rank_split
from personalign.curate.synth import synth_ranking
from personalign.records.errors import RecordError
from personalign.records.io import write_jsonl

N = 60


def load(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


@pytest.fixture()
def ranking6(tmp_path) -> tuple[list[dict], object]:
    """60 ranking-6 records, each tagged with its position (`id`, kept as an extra key)."""
    records = [{**rec, "id": i} for i, rec in enumerate(synth_ranking(N, k=6, seed=3))]
    path = tmp_path / "r6.jsonl"
    write_jsonl(records, path)
    return records, path


def test_rank_split_same_prompts_in_same_order_and_k_best_first(tmp_path, ranking6):
    records, path = ranking6
    paths = rank_split(path, [4, 2, 3], tmp_path / "split", seed=1)
    assert sorted(paths) == [2, 3, 4]
    files = {k: load(p) for k, p in paths.items()}
    for k, recs in files.items():
        assert [r["id"] for r in recs] == list(range(N))
        assert [r["prompt"] for r in recs] == [r["prompt"] for r in records]
        for rec, src in zip(recs, records):
            assert len(rec["responses"]) == k
            reward_of = dict(zip(src["responses"], src["rewards"]))
            assert rec["rewards"] == [reward_of[r] for r in rec["responses"]]
            assert rec["rewards"] == sorted(rec["rewards"], reverse=True)
    # the per-record choice is nested across k and not always the top k
    for r2, r3, r4 in zip(files[2], files[3], files[4]):
        assert set(r2["responses"]) <= set(r3["responses"]) <= set(r4["responses"])
    assert any(rec["responses"] != src["responses"][:2] for rec, src in zip(files[2], records))


def test_rank_split_each_k_reproducible_on_its_own(tmp_path, ranking6):
    _, path = ranking6
    together = rank_split(path, [2, 3], tmp_path / "a", seed=5)
    alone = rank_split(path, [3], tmp_path / "b", seed=5)
    other_seed = rank_split(path, [3], tmp_path / "c", seed=6)
    assert load(together[3]) == load(alone[3])
    assert load(alone[3]) != load(other_seed[3])


def test_rank_split_without_rewards_keeps_order_and_ranking_form(tmp_path):
    recs = [{"prompt": f"p{i}", "responses": ["best", "good", "ok", "bad"]} for i in range(20)]
    write_jsonl(recs, tmp_path / "in.jsonl")
    out = load(rank_split(tmp_path / "in.jsonl", [2], tmp_path / "out")[2])
    order = ["best", "good", "ok", "bad"]
    for rec in out:
        assert set(rec) == {"prompt", "responses"}
        assert sorted(rec["responses"], key=order.index) == rec["responses"]
    assert len({tuple(r["responses"]) for r in out}) > 1


def test_rank_split_k_above_n_names_the_record(tmp_path):
    write_jsonl([{"prompt": "a", "responses": ["x", "y", "z"]}, {"prompt": "b", "responses": ["x", "y"]}],
                tmp_path / "in.jsonl")
    with pytest.raises(RecordError, match=r"in\.jsonl:2.*'responses'.*has 2 responses, cannot keep 3"):
        rank_split(tmp_path / "in.jsonl", [3], tmp_path / "out")


def test_equal_budget_subsets_nested_with_constant_budget(tmp_path, ranking6):
    _, path = ranking6
    split = rank_split(path, [2, 3, 4, 5], tmp_path / "split")
    manifest = equal_budget_subsets([tmp_path / "split"], 48, [2, 3, 4], tmp_path / "sub", seed=7)
    subsets = {s["k"]: s for s in manifest["subsets"]}
    assert sorted(subsets) == [2, 3, 4]  # the k=5 file in the directory is ignored
    ids = {}
    for k, s in subsets.items():
        recs = load(tmp_path / "sub" / s["file"])
        assert s["n"] * k == len(recs) * k == 48
        assert all(len(r["responses"]) == k for r in recs)
        kfile = load(split[k])
        assert recs == [kfile[r["id"]] for r in recs]  # verbatim records of the ranking-k file
        assert s["source_sha256"] == file_sha256(split[k])
        ids[k] = [r["id"] for r in recs]
    assert ids[4] == ids[3][:12] and ids[3] == ids[2][:16]
    assert ids[2] != sorted(ids[2])  # a shuffle, not the first records
    assert json.loads((tmp_path / "sub" / "manifest.json").read_text()) == manifest
    assert (manifest["budget"], manifest["seed"], manifest["prompts"]) == (48, 7, N)
    again = equal_budget_subsets(list(split.values()), 48, [4, 2], tmp_path / "sub2", seed=7)
    assert load(tmp_path / "sub2" / "k4-n12.jsonl") == load(tmp_path / "sub" / "k4-n12.jsonl")
    assert [s["k"] for s in again["subsets"]] == [2, 4]


@pytest.mark.parametrize(("budget", "ks", "message"), [
    (50, [2, 3], r"budget 50 is not divisible by k=3"),
    (240, [2, 4], r"needs 120 prompts for k=2 but the data has only 60 \(the largest budget for these ks is 120\)"),
    (24, [2, 6], r"no input file has k=6"),
])
def test_equal_budget_subsets_errors(tmp_path, ranking6, budget, ks, message):
    _, path = ranking6
    rank_split(path, [2, 3, 4], tmp_path / "split")
    with pytest.raises(ValueError, match=message):
        equal_budget_subsets([tmp_path / "split"], budget, ks, tmp_path / "sub")


def test_equal_budget_subsets_rejects_different_prompts_or_mixed_k(tmp_path, ranking6):
    records, path = ranking6
    k2 = rank_split(path, [2], tmp_path / "a")[2]
    other = [{**r, "prompt": r["prompt"] + "?"} if r["id"] == 5 else r for r in records]
    write_jsonl(other, tmp_path / "other.jsonl")
    k4 = rank_split(tmp_path / "other.jsonl", [4], tmp_path / "b")[4]
    with pytest.raises(ValueError, match="do not hold the same prompts in the same order"):
        equal_budget_subsets([k2, k4], 8, [2, 4], tmp_path / "sub")
    mixed = load(k2)[:3] + [records[3]]
    write_jsonl(mixed, tmp_path / "mixed.jsonl")
    with pytest.raises(RecordError, match=r"mixed\.jsonl:4.*has 6 responses but the file's first record has 2"):
        equal_budget_subsets([tmp_path / "mixed.jsonl"], 4, [2], tmp_path / "sub")


def test_pick_records_in_given_order(ranking6):
    records, path = ranking6
    assert [r["id"] for r in pick_records(path, [7, 0, 59])] == [7, 0, 59]
    with pytest.raises(ValueError, match="out of range"):
        pick_records(path, [60])


def test_cli_rank_split_and_subsets(tmp_path, ranking6):
    _, path = ranking6
    runner = CliRunner()
    res = runner.invoke(app, ["data", "rank-split", str(path), "--k", "2", "--k", "4", "--out-dir", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["data", "subsets", str(tmp_path / "s"), "--budget", "40", "--k", "2", "--k", "4",
                              "--out-dir", str(tmp_path / "sub"), "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert len(load(tmp_path / "sub" / "k2-n20.jsonl")) == 20 and len(load(tmp_path / "sub" / "k4-n10.jsonl")) == 10
    res = runner.invoke(app, ["data", "subsets", str(tmp_path / "s"), "--budget", "42", "--k", "4",
                              "--out-dir", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "not divisible by k=4" in res.output

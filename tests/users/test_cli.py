"""`personalign users train|eval|directions` on synthetic users with the packaged MiniLM, and their bad inputs."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from personalign.cli import app
from personalign.records.io import read_examples, write_jsonl

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.duration(19)
def test_a_learned_user_model_separates_unseen_users_and_bt_does_not(synth_users, tmp_path):
    for rep in ("mean-diff", "latent"):
        res = run("users", "eval", "--model", str(synth_users[rep]), "--data", str(synth_users["test"]),
                  "--shots", "0", "--shots", "4", "--out", str(tmp_path / rep))
        assert res.exit_code == 0, res.output
        result = json.loads((tmp_path / rep / "accuracy.json").read_text())
        assert {"accuracy", "ci", "n"} <= result.keys() and result["shots"] == 4 and result["n"] == 60
        assert result["ci"][0] > 0.6, result  # 4 past pairs of each unseen user are enough
        assert [c["shots"] for c in result["curve"]] == [0, 4]
        assert (tmp_path / rep / "accuracy.md").read_text().count("\n| ") == 3
    assert json.loads((tmp_path / "mean-diff" / "accuracy.json").read_text())["curve"][0]["accuracy"] == 0.5  # ties
    res = run("users", "train", "--data", str(synth_users["train"]), "--representation", "bt", "--out",
              str(tmp_path / "bt"))
    assert res.exit_code == 0, res.output
    config = json.loads((tmp_path / "bt" / "usermodel.json").read_text())
    assert config["representation"] == "bt" and config["features"]["encoder"] == "minilm" and config["users"] == 100
    assert "## Command" in (tmp_path / "bt" / "README.md").read_text()
    run("users", "eval", "--model", str(tmp_path / "bt"), "--data", str(synth_users["test"]), "--out",
        str(tmp_path / "bt-eval"))
    bt = json.loads((tmp_path / "bt-eval" / "accuracy.json").read_text())["accuracy"]
    assert bt < json.loads((tmp_path / "mean-diff" / "accuracy.json").read_text())["accuracy"] - 0.15


def test_bad_inputs_end_in_one_line_and_exit_2(synth_users, tmp_path, tiny_model_dir):
    def fails(*args: str, needle: str):
        res = run(*args)
        assert res.exit_code == 2, res.output
        assert needle in res.output and "Traceback" not in res.output, res.output
        assert res.output.strip().count("\n") == 0 or res.output.strip().splitlines()[-1].startswith("error:")

    model = str(synth_users["mean-diff"])
    fails("users", "eval", "--model", str(tiny_model_dir), "--data", str(synth_users["test"]), "--out",
          str(tmp_path / "a"), needle="not a user model")
    fails("users", "eval", "--model", model, "--data", str(synth_users["test"]), "--shots", "5", "--out",
          str(tmp_path / "b"), needle="all 60 users skipped")
    fails("users", "eval", "--model", model, "--data", str(synth_users["test"]), "--features", str(tiny_model_dir),
          "--limit", "3", "--out", str(tmp_path / "c"), needle="features of dimension")
    write_jsonl([{"prompt": "p", "completion": "c", "label": True}], tmp_path / "unpaired.jsonl")
    fails("users", "train", "--data", str(tmp_path / "unpaired.jsonl"), "--representation", "bt", "--out",
          str(tmp_path / "d"), needle="a record without a pair")


def test_users_with_too_few_shots_are_skipped_and_counted(synth_users, tmp_path):
    records = [json.loads(line) for line in synth_users["test"].read_text().splitlines()[:10]]
    for r in records[:4]:
        r["Pair-wise Comparative Feedback"] = r["Pair-wise Comparative Feedback"][:1]
    write_jsonl(records, tmp_path / "mixed.jsonl")
    res = run("users", "eval", "--model", str(synth_users["mean-diff"]), "--data", str(tmp_path / "mixed.jsonl"),
              "--shots", "2", "--out", str(tmp_path / "e"))
    assert res.exit_code == 0 and "4 of 10 users skipped" in res.output, res.output
    assert json.loads((tmp_path / "e" / "accuracy.json").read_text())["skipped"] == 4


def test_user_id_groups_are_users_and_their_first_pairs_the_shots(synth_users, tmp_path):
    from personalign.users.features import FeatureSpec
    from personalign.users.population import load_population

    rows = [{"prompt": f"q{i}", "chosen": f"yes {i}", "rejected": f"no {i}", "user_id": "ann" if i % 2 else "bob"}
            for i in range(6)]
    write_jsonl(rows, tmp_path / "grouped.jsonl")
    pop = load_population(tmp_path / "grouped.jsonl", FeatureSpec(), progress=False)
    assert [u.user for u in pop.users] == ["bob", "ann"] and [len(u.chosen) for u in pop.users] == [3, 3]
    assert pop.users[0].split(2) == ([0, 1], [2]) and pop.users[0].split(3) is None


def test_directions_from_raw_feedback_give_a_pba_profile(synth_users, tmp_path):
    res = run("users", "directions", "train", "--data", str(synth_users["train"]), "--out", str(tmp_path / "dir"),
              "--max-steps", "200")
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "dir" / "directions.json").read_text())["metrics"]
    assert metrics["sign_agreement"] > 0.8 and metrics["recall"] > 0.1, metrics  # the sides it names are right
    records = [json.loads(line) for line in synth_users["test"].read_text().splitlines()[:3]]
    for r in records:
        for p in r["Pair-wise Comparative Feedback"]:
            del p["Preference Direction"]
    write_jsonl(records, tmp_path / "raw.jsonl")
    res = run("users", "directions", "annotate", "--model", str(tmp_path / "dir"), "--data", str(tmp_path / "raw.jsonl"),
              "--out", str(tmp_path / "annotated.jsonl"))
    assert res.exit_code == 0 and "12 history pairs" in res.output, res.output
    examples = list(read_examples(tmp_path / "annotated.jsonl"))
    assert all(len(p.direction) == 90 and set(p.direction) <= {0.0, 0.5, 1.0} for ex in examples for p in ex.user.pairs)

"""`eval suite`: every benchmark file under a directory, AlignX protocol, one table, resumable per file."""
from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from personalign.cli import app
from personalign.eval import suite as suite_mod
from personalign.eval.suite import SuiteConfig, find_benchmarks, run_suite


def test_suite_on_the_shared_p_soups_directory_writes_the_table_and_resumes(psoups_path, tiny_model_dir, tmp_path,
                                                                            monkeypatch, one_torch_thread):
    out = tmp_path / "suite"
    args = ["eval", "suite", "--method", "pba", "--data-dir", str(psoups_path.parent), "--policy",
            str(tiny_model_dir), "--limit", "3", "--max-prompt-tokens", "2048", "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    table = json.loads((out / "suite.json").read_text())
    [row] = table["benchmarks"]
    per_file = json.loads((out / "friendly_unfriendly" / "accuracy.json").read_text())
    assert row["benchmark"] == "friendly_unfriendly" and row["accuracy"] == per_file["accuracy"]["overall"]
    assert row["accuracy"]["n"] == 3 and row["mode"] == "alignment"  # PBA policy vs the ICA-layout reference
    assert per_file["config"]["view"]["template"] == "alignx-eval"
    assert per_file["config"]["reference_view"] == {**per_file["config"]["view"], "view": "ica"}
    md = (out / "suite.md").read_text()
    assert "| friendly_unfriendly | 3 |" in md and "95% CI" in md

    def must_not_score(cfg):
        raise AssertionError("a finished benchmark was scored again")

    monkeypatch.setattr(suite_mod, "evaluate_accuracy", must_not_score)
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "read back (already scored)" in again.output
    assert json.loads((out / "suite.json").read_text()) == table


def test_benchmarks_are_found_recursively_and_hidden_folders_skipped(tmp_path):
    for name in ("UF-P-4/a.json", "UF-P-4/b.jsonl", "PRISM.json", ".personalign-cache/x.json", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("[]")
    assert [n for n, _ in find_benchmarks(tmp_path)] == ["PRISM", "UF-P-4/a", "UF-P-4/b"]
    with pytest.raises(FileNotFoundError, match="not a directory"):
        find_benchmarks(tmp_path / "UF-P-4" / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no benchmark files"):
        find_benchmarks(empty)


def test_a_changed_setting_rescores(psoups_path, tiny_model_dir, tmp_path, one_torch_thread):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(psoups_path, data / "p.json")
    cfg = SuiteConfig(method="ica", data_dir=str(data), out=str(tmp_path / "o"), policy=str(tiny_model_dir), limit=2,
                      max_prompt_tokens=2048, n_boot=50)
    seen = []
    run_suite(cfg, on_file=lambda name, reused: seen.append(reused))
    run_suite(cfg, on_file=lambda name, reused: seen.append(reused))
    run_suite(cfg.model_copy(update={"limit": 3}), on_file=lambda name, reused: seen.append(reused))
    assert seen == [False, True, False]

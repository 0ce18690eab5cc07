"""Acceptance: P-Soups records through the command line with the embedded model — generate under
views none and persona (gold persona), judge persona vs. none under both rubrics, report — and the
report opened in headless Chromium. The report, its Markdown summary and the screenshot are copied
to .cache/test-artifacts/end-to-end/ in the repository."""
from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
from report_helpers import colored_pixels
from typer.testing import CliRunner

from personalign.cli import app

N_RECORDS = 6
MAX_NEW_TOKENS = 32
TITLE = "P-Soups end to end"
ARTIFACTS = Path(__file__).resolve().parents[2] / ".cache" / "test-artifacts" / "end-to-end"


def invoke(*args: str) -> str:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.duration(21)
def test_generate_judge_report_on_psoups(psoups_path, default_model_dir, browser, skipped_step, tmp_path):
    runs = tmp_path / "runs"
    for view in ("none", "persona"):
        invoke("eval", "generate", "--data", str(psoups_path), "--view", view, "--persona-source", "gold",
               "--limit", str(N_RECORDS), "--max-new-tokens", str(MAX_NEW_TOKENS), "--out", str(runs / view))
    records = json.loads(psoups_path.read_text())[:N_RECORDS]
    for view in ("none", "persona"):
        rows = [json.loads(line) for line in (runs / view / "generations.jsonl").read_text().splitlines()]
        assert [r["prompt"] for r in rows] == [r["prompt"] for r in records]
        assert all(r["response"].strip() and r["view"] == view for r in rows)
        assert (records[0]["ground_truth_persona"] in rows[0]["view_prompt"]) == (view == "persona")
    assert "(0 generated" in invoke("eval", "generate", "--data", str(psoups_path), "--view", "persona",
                                    "--persona-source", "gold", "--limit", str(N_RECORDS), "--max-new-tokens",
                                    str(MAX_NEW_TOKENS), "--out", str(runs / "persona"))

    invoke("eval", "judge", "--base", str(runs / "none"), "--test", str(runs / "persona"), "--out", str(runs / "judge"))
    judge = json.loads((runs / "judge" / "judge.json").read_text())
    assert set(judge["rubrics"]) == {"quality", "personalization"} and judge["pairs"] == N_RECORDS
    pairs = [json.loads(line) for line in (runs / "judge" / "judgments.jsonl").read_text().splitlines()]
    for name, r in judge["rubrics"].items():
        # the counts are those of the per-pair verdicts, re-derived here from the judge's two answers
        outcomes = []
        for row in pairs:
            base_first, test_first = row[name]["verdicts"]
            outcomes.append("win" if (base_first, test_first) == (2, 1) else
                            "loss" if (base_first, test_first) == (1, 2) else "tie")
            assert row[name]["outcome"] == outcomes[-1]
        assert (r["wins"], r["ties"], r["losses"]) == tuple(map(outcomes.count, ("win", "tie", "loss")))
        decisive = r["wins"] + r["losses"]
        if decisive:
            assert r["win_rate"]["value"] == pytest.approx(r["wins"] / decisive)
        else:
            assert math.isnan(r["win_rate"]["value"])
    assert judge["delta_pq"]["n"] == N_RECORDS
    print((runs / "judge" / "judge.md").read_text())

    report = tmp_path / "report.html"
    invoke("report", str(runs), "--out", str(report), "--title", TITLE)
    page = report.read_text()
    for heading in ("Pairwise judge win rates", "Generation runs", "Examples"):
        assert f"<h2>{heading}</h2>" in page
    assert "Reword the following sentence using fewer words." in page
    assert re.search(r"<title>(.*?)</title>", page).group(1) == TITLE
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    for path in (report, report.with_suffix(".md")):
        shutil.copy(path, ARTIFACTS)
    if browser is None:
        return skipped_step("the browser step (DOM title and screenshot)")
    dom = browser.dump_dom(report, tmp_path)
    assert re.search(r"<title>(.*?)</title>", dom).group(1) == TITLE
    png = browser.screenshot(report, tmp_path / "report.png", tmp_path)
    assert colored_pixels(png)[0] > 200
    shutil.copy(png, ARTIFACTS)
    print(f"report and screenshot: {ARTIFACTS}")

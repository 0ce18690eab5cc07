"""Acceptance: `personalign quickstart --size tiny` end to end with the embedded model — every stage
writes its output, the report holds the accuracy before and after training, and its plots are on
screen in headless Chromium. Report, summary and screenshot are copied to
.cache/test-artifacts/quickstart/ in the repository."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from report_helpers import colored_pixels
from typer.testing import CliRunner

from personalign.cli import app
from personalign.quickstart import SIZES
from personalign.records.io import read_examples

ARTIFACTS = Path(__file__).resolve().parents[2] / ".cache" / "test-artifacts" / "quickstart"


def _overall(md: str, run: str) -> str:
    """The overall accuracy cell of `run` in the report's Markdown accuracy table."""
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 7 and cells[0].split("/")[-1] == run and cells[3] == "overall":
            return cells[5]
    raise AssertionError(f"no overall accuracy row for {run} in the report summary")


@pytest.mark.duration(120)
def test_quickstart_tiny(default_model_dir, browser, skipped_step, tmp_path):
    out = tmp_path / "quickstart"
    res = CliRunner().invoke(app, ["quickstart", "--size", "tiny", "--out", str(out)])
    assert res.exit_code == 0, res.output
    size = SIZES["tiny"]

    for name in ("synth-train", "synth-heldout", "p-soups-slice"):
        assert not (out / "data" / f"{name}.rejects.jsonl").exists(), "bundled data must validate"
    personas = list(read_examples(out / "personas" / "personas.jsonl"))
    assert len(personas) == size.persona_records
    assert all(p.user.personas.get("chosen_persona", "").strip() for p in personas)
    metrics = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    assert max(m.get("step", 0) for m in metrics) == size.steps
    assert (out / "train" / "final" / "adapter_model.safetensors").exists()
    for run in ("generations-base", "generations-personalized"):
        rows = (out / run / "generations.jsonl").read_text().splitlines()
        assert len(rows) == size.generations and all(json.loads(r)["response"].strip() for r in rows)

    before = json.loads((out / "accuracy-before" / "accuracy.json").read_text())
    after = json.loads((out / "accuracy-after" / "accuracy.json").read_text())
    assert before["mode"] == "raw" and after["mode"] != "raw"
    assert before["accuracy"]["overall"]["n"] == after["accuracy"]["overall"]["n"] == size.heldout_users
    report = out / "report.html"
    assert f"report: {report}" in res.output.replace("\n", "")
    md = report.with_suffix(".md").read_text()
    assert _overall(md, "accuracy-before") == f"{before['accuracy']['overall']['value']:.3f}"
    assert _overall(md, "accuracy-after") == f"{after['accuracy']['overall']['value']:.3f}"
    # before -> after compares one metric: raw log-prob accuracy of the base and of the trained policy
    after_raw = json.loads((out / "accuracy-after-raw" / "accuracy.json").read_text())
    comparison = json.loads((out / "accuracy-comparison.json").read_text())
    assert after_raw["mode"] == before["mode"] == "raw"
    assert comparison["metric"].startswith("raw log-prob accuracy")
    assert comparison["before"] == before["accuracy"]["overall"]
    assert comparison["after"] == after_raw["accuracy"]["overall"]
    rows_before = [json.loads(r) for r in (out / "accuracy-before" / "scores.jsonl").read_text().splitlines()]
    rows_after = [json.loads(r) for r in (out / "accuracy-after" / "scores.jsonl").read_text().splitlines()]
    hand = sum((a["policy_logp"][0] > a["policy_logp"][1]) - (b["policy_logp"][0] > b["policy_logp"][1])
               for a, b in zip(rows_after, rows_before)) / len(rows_before)
    assert comparison["difference"]["value"] == pytest.approx(hand)
    assert comparison["difference"]["low"] <= hand <= comparison["difference"]["high"]
    assert "raw log-prob accuracy, base → trained" in res.output
    assert "peak RSS so far (GB)" in res.output and "10. report: " in res.output  # memory per stage
    # the headline: a learned user model against one reward for everyone, on the same held-out users
    headline = json.loads((out / "headline.json").read_text())
    assert {"metric", "personalized", "unpersonalized", "difference", "ci", "n"} <= headline.keys()
    assert headline["n"] == size.user_model_heldout and headline["ci"][0] > 0, headline
    latent = [json.loads(r) for r in (out / "user-models" / "accuracy-latent" / "per_user.jsonl").read_text().splitlines()]
    bt = [json.loads(r) for r in (out / "user-models" / "accuracy-bt" / "per_user.jsonl").read_text().splitlines()]
    at4 = [(a["correct"] / a["pairs"]) - (b["correct"] / b["pairs"]) for a, b in zip(latent, bt) if a["shots"] == 4]
    assert headline["difference"] == pytest.approx(sum(at4) / len(at4))  # the paired difference by hand
    assert "headline: personalized" in res.output.replace("\n", " ")
    page = report.read_text()
    for heading in ("User models: accuracy vs shots", "Alignment accuracy", "Training curves", "Generation runs"):
        assert f"<h2>{heading}</h2>" in page

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for f in (report, report.with_suffix(".md")):
        shutil.copy(f, ARTIFACTS / f.name)
    if browser is None:
        return skipped_step("the screenshot of the report")
    png = browser.screenshot(report, tmp_path / "report.png", tmp_path)
    distinct, saturated = colored_pixels(png)
    assert distinct > 500 and saturated > 5_000, "the accuracy and training plots are on screen"
    shutil.copy(png, ARTIFACTS / png.name)

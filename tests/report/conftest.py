"""Report fixtures: a results tree made by the real producers (with XSS payloads in every piece of
dataset and model text), and headless Chromium where it is installed."""
from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from personalign.cli import app
from personalign.eval.alignment import AccuracyResult, write_accuracy
from personalign.eval.generate import GenerateConfig, generate_responses
from personalign.eval.judge import judge_runs, write_judge
from personalign.llm.base import GenerationConfig
from personalign.metrics import sliced_accuracy
from personalign.persona.judge import persona_accuracy, persona_preference, write_persona_result
from personalign.records.io import read_examples, write_jsonl
from personalign.report.html import build_report
from personalign.views.build import ViewConfig

sys.path.insert(0, str(Path(__file__).parent))
from browser import CHROMIUM, MISSING  # noqa: E402
from report_helpers import PAYLOADS, TITLE, Browser  # noqa: E402


class EchoBackend:
    """Generation stand-in: echoes the last user message; the persona view's answers come out longer."""

    identity = "fake-echo"

    def generate(self, requests: Sequence, config: GenerationConfig, *, progress: bool = True) -> list[str]:
        return [f"Sure! {r[-1]['content']}" for r in requests]


class LongerJudge:
    """Prefers the longer response."""

    identity = "fake-longer-judge"

    def generate(self, requests: Sequence, config: GenerationConfig, *, progress: bool = True) -> list[str]:
        pattern = re.compile(r"Response 1: (.*?)\n\nResponse 2: (.*?)\n\n(?:Is|Does) the response", re.S)
        shown = [pattern.search(r[-1]["content"]).groups() for r in requests]
        return ["2" if len(second) > len(first) else "1" for first, second in shown]


def payload_records() -> list[dict]:
    return [{"prompt": f"Question {i}: {p}", "chosen": f"Chosen answer {p}", "rejected": "Rejected answer.",
             "chosen_persona": f"The user is a careful reader who likes {p} and short, direct answers.",
             "rejected_persona": "The user is a playful reader who likes long, funny answers.",
             "ground_truth_persona": f"The user likes {p}."} for i, p in enumerate(PAYLOADS)]


@pytest.fixture(scope="session")
def results_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """accuracy.json ×2, two generation runs, a judge run, a real training run's metrics.jsonl, saliency
    JSON from `persona saliency --out`, a diversity JSON, and persona accuracy and preference results, all
    under one directory."""
    root = tmp_path_factory.mktemp("results")
    data = root.parent / "payloads.jsonl"
    write_jsonl(payload_records(), data)
    for view in ("none", "persona"):
        cfg = GenerateConfig(data=str(data), out=str(root / f"gen-{view}"),
                             view=ViewConfig(view=view, persona_source="gold"))
        generate_responses(cfg, EchoBackend())
    write_judge(judge_runs(root / "gen-none", root / "gen-persona", LongerJudge(), n_boot=100), root / "judge")
    rng = np.random.default_rng(0)
    for view, p in (("none", 0.55), ("ica", 0.7)):
        slices = ["ugc", "pairs", "all", "none"] * 10
        estimates = sliced_accuracy(rng.random(40) < p, slices, n_boot=200)
        result = AccuracyResult("alignment", estimates, [], slices, [], None,
                                {"data": str(data), "view": {"view": view, "template": "chat"}})
        write_accuracy(result, root / f"accuracy-{view}")
    _train(tiny_model_dir, data, root / "train")
    res = CliRunner().invoke(app, ["persona", "saliency", "--data", str(data), "--cutoff", "1",
                                   "--out", str(root / "persona" / "saliency.json")])
    assert res.exit_code == 0, res.output
    diversity = {"kind": "diversity", "metric": "bigram",
                 "curves": {f"prompts {PAYLOADS[0]}": [{"n": n, "d": 0.3 * n ** 0.5} for n in (10, 20, 40, 80)],
                            "greedy": [{"n": n, "d": 0.4 * n ** 0.5} for n in (10, 20, 40, 80)]}}
    (root / "diversity").mkdir()
    (root / "diversity" / "diversity.json").write_text(json.dumps(diversity))
    examples = list(read_examples(data))
    write_persona_result(root / "persona" / "accuracy.json", persona_accuracy(examples, FirstJudge()))
    write_persona_result(root / "persona" / "prefer.json", persona_preference(examples, FirstJudge()))
    return root


class FirstJudge:
    """Always answers "1": position bias, so persona accuracy sits at chance and preference at ties."""

    identity = "fake-first-judge <b>1</b>"

    def generate(self, requests: Sequence, config: GenerationConfig, *, progress: bool = True) -> list[str]:
        return ["1"] * len(requests)


@pytest.fixture(scope="session")
def report_page(results_dir, tmp_path_factory) -> Path:
    """The report over `results_dir`."""
    return build_report([results_dir], tmp_path_factory.mktemp("report") / "report.html", title=TITLE)


def _train(model_dir: Path, data: Path, out: Path) -> None:
    """A few DPO steps of the tiny model: the training run's own metrics.jsonl."""
    import torch

    from personalign.train.config import TrainConfig
    from personalign.train.loop import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(TrainConfig(model=str(model_dir), data=str(data), eval_data=str(data), view=ViewConfig(view="none"),
                          learning_rate=1e-3, per_device_train_batch_size=2, max_steps=6, logging_steps=1,
                          eval_steps=3, save_steps=1000, max_length=256, output_dir=str(out)))
    finally:
        torch.set_num_threads(threads)




@pytest.fixture(scope="session")
def browser() -> Browser | None:
    """Headless Chromium, or None where it is missing: end-to-end tests then run everything but the
    browser step, and say which step they skipped (`skipped_step`)."""
    return Browser(CHROMIUM) if CHROMIUM.exists() else None


@pytest.fixture(scope="session")
def chromium(browser) -> Browser:
    """Headless Chromium for tests that are nothing but a browser check: skipped, visibly, without it."""
    if browser is None:
        pytest.skip(f"BROWSER TEST SKIPPED: {MISSING}")
    return browser


@pytest.fixture
def skipped_step(request):
    """`skipped_step("the screenshot")` records a step left out of an otherwise complete test: shown in
    the run's warnings summary and as a `skipped_steps` property in junit XML."""

    def skip(step: str) -> None:
        import warnings

        request.node.user_properties.append(("skipped_steps", step))
        warnings.warn(f"STEP SKIPPED in {request.node.name}: {step}: {MISSING}", stacklevel=2)

    return skip

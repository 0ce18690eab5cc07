"""Alignment accuracy end to end on tiny models: raw vs reference mode, cache reuse, sharding."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from personalign.data.io import write_jsonl
from personalign.eval.alignment import AccuracyConfig, evaluate_accuracy, write_accuracy
from personalign.models.loading import load_model
from personalign.models.logprobs import score_responses
from personalign.models.tiny import save_tiny

WORDS = "red blue green small large quick slow happy calm bright dark warm cold".split()


def _pairs(n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    recs = []
    for i in range(n):
        w = rng.choice(WORDS, size=6)
        rec = {"prompt": f"Describe item {i}: {' '.join(w[:3])}", "chosen": " ".join(w[2:]), "rejected": " ".join(w[:4])}
        if i % 3 == 0:
            rec["Pair-wise Comparative Feedback"] = [{"prompt": "p", "chosen": "a b", "rejected": "c d"}]
        if i % 3 == 1:
            rec["User-Generated Content"] = [{"prompt": "post", "comment": "nice"}]
        recs.append(rec)
    return recs


@pytest.fixture(scope="module")
def pair_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("acc") / "pairs.jsonl"
    write_jsonl(_pairs(24), path)
    return path


@pytest.fixture(scope="module")
def second_model_dir(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-b"), seed=1)


def test_raw_accuracy_matches_direct_scoring(pair_file, tiny_model_dir, tmp_path):
    cfg = AccuracyConfig(data=str(pair_file), policy=str(tiny_model_dir), cache=False, n_boot=200)
    res = evaluate_accuracy(cfg)
    assert res.mode == "raw" and res.reference is None
    model, tok = load_model(tiny_model_dir)
    from personalign.data.io import read_examples
    from personalign.data.views import ViewConfig, render_views

    rendered = list(render_views(read_examples(pair_file), ViewConfig(max_length=4096), tok))
    scores = score_responses(model, tok, [(r.prompt, r.responses) for r in rendered], progress=False)
    expected = np.mean([s.logp[0] > s.logp[1] for s in scores])
    assert res.estimates["overall"].value == pytest.approx(expected)
    assert {"pairs", "ugc", "none"} <= set(res.estimates)
    js, md, sc = write_accuracy(res, tmp_path)
    assert json.loads(js.read_text())["mode"] == "raw"
    assert "Raw log-prob accuracy" in md.read_text()
    assert len(sc.read_text().splitlines()) == 24


def test_reference_mode_uses_margin_and_cache(pair_file, tiny_model_dir, second_model_dir, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_bytes(pair_file.read_bytes())
    cfg = AccuracyConfig(data=str(data), policy=str(second_model_dir), reference=str(tiny_model_dir), n_boot=200)
    res = evaluate_accuracy(cfg)
    assert res.mode == "alignment"
    margins = [(p.logp[0] - p.logp[1]) - (r.logp[0] - r.logp[1]) for p, r in zip(res.policy, res.reference)]
    assert res.estimates["overall"].value == pytest.approx(np.mean([m > 0 for m in margins]))
    cached = sorted((tmp_path / ".personalign-cache").glob("logprobs-*.safetensors"))
    assert len(cached) == 2
    again = evaluate_accuracy(cfg)
    assert [p.logp for p in again.policy] == [p.logp for p in res.policy]
    assert sorted((tmp_path / ".personalign-cache").glob("*")) == cached


def _run(cmd: list[str], cwd: Path, **env: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200", **env)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_two_processes_write_the_same_accuracy_file(pair_file, tiny_model_dir, second_model_dir, tmp_path):
    common = ["eval", "accuracy", "--data", str(pair_file), "--policy", str(second_model_dir),
              "--reference", str(tiny_model_dir), "cache=false"]
    single = _run([sys.executable, "-m", "personalign", *common, "--out", str(tmp_path / "one")], tmp_path)
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    # accelerate's `--cpu` runs several processes only under MPI; this starts two gloo processes on CPU
    sharded = _run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "-m", "personalign", *common,
                    "--out", str(tmp_path / "two")], tmp_path, ACCELERATE_USE_CPU="true")
    assert "scored on 1 process)" in single and "scored on 2 processes" in sharded
    one, two = (tmp_path / "one" / "accuracy.json").read_bytes(), (tmp_path / "two" / "accuracy.json").read_bytes()
    assert one == two
    assert (tmp_path / "one" / "scores.jsonl").read_text().count("\n") == 24

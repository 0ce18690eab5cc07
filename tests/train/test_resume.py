"""Kill a training process with SIGKILL after a checkpoint, resume it, and land on the same weights."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml
from procs import launched, wait_for
from safetensors.torch import load_file

from personalign.config import load_config
from personalign.records.io import write_jsonl
from personalign.train.checkpoints import checkpoints
from personalign.train.config import TrainConfig
from personalign.train.loop import train

# Runs the CLI, but parks forever inside the `block_at`-th loss computation after writing `marker`.
PARKED_TRAINER = """
import sys, time
from pathlib import Path
from personalign.train import loop

marker, block_at = Path(sys.argv[1]), int(sys.argv[2])
real, calls = loop.objective, []

def objective(*args, **kwargs):
    calls.append(1)
    if len(calls) == block_at:
        marker.write_text("parked")
        time.sleep(600)
    return real(*args, **kwargs)

loop.objective = objective
from personalign.cli import app
sys.argv = ["personalign", *sys.argv[3:]]
app()
"""


def records(n: int) -> list[dict]:
    return [{"prompt": f"Tell me something, request {i}.", "chosen": f"Here is fact {i}, kindly put.",
             "rejected": "No.", "Demographic Information": f"The user is {20 + i} years old."} for i in range(n)]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "final" / "model.safetensors"))


def losses(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]


@pytest.fixture
def single_thread_env(one_torch_thread):
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def test_sigkill_and_resume_matches_uninterrupted_run(tiny_model_dir, tmp_path, single_thread_env):
    data = tmp_path / "pairs.jsonl"
    write_jsonl(records(16), data)
    # 16 records / global batch 8 (4 per device × 2 accumulation) = 2 steps per epoch, 12 steps.
    settings = {"model": str(tiny_model_dir), "data": str(data), "view": {"view": "demo"}, "learning_rate": 1e-3,
                "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, "num_train_epochs": 6,
                "max_length": 64, "warmup_ratio": 0.2, "lr_scheduler_type": "cosine", "weight_decay": 0.01,
                "logging_steps": 1, "save_steps": 3, "save_total_limit": 1, "seed": 3}
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(settings))
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    script, marker, log = tmp_path / "parked.py", tmp_path / "parked", tmp_path / "killed.log"
    script.write_text(PARKED_TRAINER)
    block_at = 2 * 7 + 2  # the second micro-batch of step 8: checkpoint-6 exists, step 7 is done but unsaved
    command = [sys.executable, str(script), str(marker), str(block_at), "train", "--config", str(config),
               f"output_dir={killed}"]
    with open(log, "w") as out, launched(command, env=single_thread_env, stdout=out, stderr=out) as proc:
        train(load_config(TrainConfig, config, [f"output_dir={whole}"]))  # the uninterrupted run, meanwhile
        wait_for(marker, proc, timeout=300)
    assert proc.returncode == -9, log.read_text()[-3000:]
    assert checkpoints(killed)[-1].name == "checkpoint-6" and not (killed / "final").exists()

    resumed = train(load_config(TrainConfig, config, [f"output_dir={killed}", "resume_from_checkpoint=latest"]))
    assert resumed.resumed_from == killed / "checkpoint-6"

    reference, result = weights(whole), weights(killed)
    start = load_file(str(tiny_model_dir / "model.safetensors"))
    assert max((reference[k] - start[k]).abs().max().item() for k in start) > 1e-3  # training moved the weights
    assert reference.keys() == result.keys()
    for name in reference:
        torch.testing.assert_close(result[name], reference[name], atol=1e-5, rtol=0, msg=name)
    assert [s for s, _ in losses(killed)] == list(range(1, 13))
    for (_, a), (_, b) in zip(losses(killed), losses(whole)):
        assert a == pytest.approx(b, abs=1e-5)

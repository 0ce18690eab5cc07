"""Two CPU processes (DDP over gloo, launched by `accelerate launch`) take the same optimizer step as
one process on the same global batch.

`accelerate launch --cpu` uses its single-process launcher (it expects `mpirun` for several CPU
processes), so the test launches through torchrun (`--multi_gpu`) with ACCELERATE_USE_CPU=true,
which makes accelerate set up a MULTI_CPU (gloo) run.

AdamW's first step is lr·g/(|g| + eps); with eps = 1 and small gradients it is ≈ lr·g, so the
updated weights compare the averaged gradients themselves, not just their signs.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from procs import ADDRESS_IN_USE, free_port, launched, retry_on_port_conflict, run
from safetensors.torch import load_file

from personalign.config import load_config
from personalign.records.io import write_jsonl
from personalign.train.checkpoints import export_model
from personalign.train.config import TrainConfig
from personalign.train.loop import train

STEP = ["max_steps=1", "learning_rate=1.0", "adam_epsilon=1.0", "max_grad_norm=null", "weight_decay=0.0",
        "max_length=64"]


def records() -> list[dict]:
    return [{"prompt": f"Question {i}: how should I spend my evening?", "chosen": f"Read a good book, friend {i}.",
             "rejected": "Whatever.", "Demographic Information": f"The user is {30 + 7 * i} years old."}
            for i in range(4)]


@pytest.mark.duration(12)
@pytest.mark.parametrize("loss", ["dpo", "rm"])
def test_two_processes_match_one_process(loss, tiny_model_dir, tmp_path, one_torch_thread):
    # Separate copies of the data: each run scores its own reference log-probs (the 2-process run
    # shards that scoring too), so wrongly gathered references would change its gradients.
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        write_jsonl(records(), tmp_path / name / "pairs.jsonl")
    args = [f"model={tiny_model_dir}", f"data={tmp_path / 'two' / 'pairs.jsonl'}", "view.view=demo",
            "per_device_train_batch_size=2", f"output_dir={tmp_path / 'two' / 'run'}", f"loss={loss}", *STEP]
    with launched(_command(args, free_port()), env=_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                  text=True) as proc:
        # the single-process run, while the launched one starts up
        single = train(load_config(TrainConfig, None, [
            f"model={tiny_model_dir}", f"data={tmp_path / 'one' / 'pairs.jsonl'}", "view.view=demo",
            "per_device_train_batch_size=4", f"output_dir={tmp_path / 'one' / 'run'}", f"loss={loss}", *STEP]))
        _, stderr = proc.communicate(timeout=300)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)
    # the port was taken between picking and binding: start again on another
    if result.returncode != 0 and any(s in stderr for s in ADDRESS_IN_USE):
        result = _launch(args)
    stderr = result.stderr
    assert result.returncode == 0, stderr[-3000:]
    assert "2 per device × 2 processes" in stderr

    start = load_file(str(tiny_model_dir / "model.safetensors"))
    one = load_file(str(single.final_dir / "model.safetensors"))
    two = load_file(str(tmp_path / "two" / "run" / "final" / "model.safetensors"))
    assert max((one[k] - start[k]).abs().max().item() for k in start) > 1e-3
    assert ("score.weight" in one) == (loss == "rm")  # a reward model's head is trained and saved
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=1e-5, rtol=0, msg=name)


_ENV = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}


def _command(args: list[str], port: int) -> list[str]:
    accelerate = Path(sys.executable).with_name("accelerate")
    return [str(accelerate if accelerate.exists() else shutil.which("accelerate")), "launch", "--multi_gpu",
            "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(port), "-m", "personalign", "train", *args]


def _launch(args: list[str]) -> subprocess.CompletedProcess:
    return retry_on_port_conflict(lambda port: run(_command(args, port), env=_ENV, timeout=300))


@pytest.mark.duration(27)
def test_two_processes_evaluate_and_resume_like_one(tiny_model_dir, tmp_path, one_torch_thread):
    """Under DDP a run stopped after step 1 and resumed from its checkpoint ends with the weights of an
    uninterrupted one-process run, and its evaluation (sharded over both processes) gives the same numbers."""
    write_jsonl(records(), tmp_path / "pairs.jsonl")
    write_jsonl(records()[:3], tmp_path / "eval.jsonl")  # 3 rows: one rank scores a repeated batch
    common = [f"model={tiny_model_dir}", f"data={tmp_path / 'pairs.jsonl'}", f"eval_data={tmp_path / 'eval.jsonl'}",
              "view.view=demo", "save_steps=1", "eval_steps=1", "max_tokens_per_batch=64", "report_to=none",
              "save_total_limit=null",
              # a constant learning rate: the first run's schedule (1 step) then is the resumed one's (2 steps)
              "lr_scheduler_type=cosine_with_min_lr", "min_lr_rate=1.0",
              *[s for s in STEP if not s.startswith("max_steps")]]
    first = _launch([*common, "per_device_train_batch_size=2", "max_steps=1", f"output_dir={tmp_path / 'two'}"])
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = _launch([*common, "per_device_train_batch_size=2", "max_steps=2", f"output_dir={tmp_path / 'two'}",
                       "resume_from_checkpoint=latest"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    single = train(load_config(TrainConfig, None, [*common, "per_device_train_batch_size=4", "max_steps=2",
                                                   f"output_dir={tmp_path / 'one'}"]))

    one = load_file(str(single.final_dir / "model.safetensors"))
    two = load_file(str(tmp_path / "two" / "final" / "model.safetensors"))
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=1e-5, rtol=0, msg=name)
    exported = load_file(str(export_model(tmp_path / "two" / "checkpoint-1", tmp_path / "export") / "model.safetensors"))
    at_step1 = load_file(str(export_model(tmp_path / "one" / "checkpoint-1", tmp_path / "export-one")
                             / "model.safetensors"))
    for name in at_step1:  # export of the DDP checkpoint: the one-process weights after step 1
        torch.testing.assert_close(exported[name], at_step1[name], atol=1e-5, rtol=0, msg=name)
    rows = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    evals = {r["step"]: r for r in rows if "eval/loss" in r}
    assert sorted(evals) == [1, 2]
    for name, value in single.eval_metrics.items():
        assert abs(evals[2][name] - value) < 1e-5, name

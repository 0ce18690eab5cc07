"""FSDP2 on CPU: torch's `fully_shard` (accelerate does not shard on CPU) over 2 gloo processes.

The engine's training module (`ResponseLogprobs`: decoder and LM head inside one forward) gives
the same DPO loss and gradients as one unsharded process, its scoring pass (`score_store`, every
rank in step) the same `[N, R]` table, and a run resumed from the sharded checkpoint (one file per
rank, through torch.distributed.checkpoint) the same weights as an uninterrupted one.
"""
from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import distributed_worker as worker  # noqa: E402


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory) -> Path:
    """The worker's output directory after one 2-process FSDP2 run."""
    out = tmp_path_factory.mktemp("fsdp")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(port), str(HERE / "distributed_worker.py"), str(out)],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def single():
    torch.set_num_threads(1)
    return worker.single_process()


def test_fsdp_matches_one_process(sharded_run, single):
    tmp_path = sharded_run
    sharded = torch.load(tmp_path / "result.pt", weights_only=False)
    shards = tmp_path / "checkpoint" / "pytorch_model_fsdp_0"
    assert sorted(p.name for p in shards.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]

    torch.testing.assert_close(sharded["loss"], single["loss"], atol=1e-5, rtol=0)
    assert sharded["grads"].keys() == single["grads"].keys()
    assert max(g.abs().max().item() for g in single["grads"].values()) > 1e-3
    for name, grad in single["grads"].items():
        torch.testing.assert_close(sharded["grads"][name], grad, atol=1e-5, rtol=0, msg=name)
    for name, param in single["params"].items():
        torch.testing.assert_close(sharded["params"][name], param, atol=1e-5, rtol=0, msg=name)
        torch.testing.assert_close(sharded["resumed_params"][name], param, atol=1e-5, rtol=0, msg=name)
    torch.testing.assert_close(sharded["scores"].logps, single["scores"].logps, atol=1e-4, rtol=1e-5)  # sums of ~200
    assert torch.equal(sharded["scores"].n_tokens, single["scores"].n_tokens)


def test_export_gathers_a_sharded_checkpoint_into_one_model(sharded_run, single, tmp_path):
    """`export` of a checkpoint in accelerate's FSDP layout (pytorch_model_fsdp_0/, one shard per rank)."""
    from safetensors.torch import load_file

    from personalign.config import dump_config
    from personalign.files import write_json
    from personalign.testing import save_tiny
    from personalign.train.checkpoints import CONFIG_FILE, STATE_FILE, export_model
    from personalign.train.config import TrainConfig

    checkpoint = sharded_run / "checkpoint"
    base = save_tiny(tmp_path / "base", seed=3)
    dump_config(TrainConfig(model=str(base), data="unused.jsonl"), checkpoint / CONFIG_FILE)
    write_json(checkpoint / STATE_FILE, {"step": 1, "global_batch": 8, "records": 8})
    exported = load_file(str(export_model(checkpoint, tmp_path / "export") / "model.safetensors"))
    after_one_step = single["params_step1"]
    for name, param in after_one_step.items():
        key = name.removeprefix("model.")
        if key in exported:
            torch.testing.assert_close(exported[key], param, atol=1e-5, rtol=0, msg=key)
    assert {k for k in exported} <= {n.removeprefix("model.") for n in after_one_step}
    assert len(exported) >= len(after_one_step) - 1  # the tied LM head is saved once


def test_export_of_a_zero_checkpoint_without_deepspeed_is_one_clear_error(tiny_model_dir, tmp_path):
    """A DeepSpeed checkpoint (accelerate's `pytorch_model/` tag) is gathered by DeepSpeed's zero_to_fp32;
    where DeepSpeed is not installed, `export` says so in one line and exits 2."""
    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("DeepSpeed is installed: the message is not shown")
    from typer.testing import CliRunner

    from personalign.cli import app
    from personalign.config import dump_config
    from personalign.files import write_json
    from personalign.train.checkpoints import CONFIG_FILE, STATE_FILE
    from personalign.train.config import TrainConfig

    checkpoint = tmp_path / "checkpoint-1"
    (checkpoint / "pytorch_model").mkdir(parents=True)
    (checkpoint / "latest").write_text("pytorch_model")
    dump_config(TrainConfig(model=str(tiny_model_dir), data="unused.jsonl"), checkpoint / CONFIG_FILE)
    write_json(checkpoint / STATE_FILE, {"step": 1, "global_batch": 8, "records": 8})
    res = CliRunner().invoke(app, ["export", str(checkpoint), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    assert "needs deepspeed, which is not installed: pip install 'personalign[deepspeed]'" in res.output and "Traceback" not in res.output

"""FSDP2 on CPU: torch's `fully_shard` (accelerate does not shard on CPU) over 2 gloo processes.

The engine's training module (`ResponseLogprobs`: decoder and LM head inside one forward) gives
the same DPO loss and gradients as one unsharded process, its scoring pass (`score_store`, every
rank in step) the same `[N, R]` table, and a run resumed from the sharded checkpoint (one file per
rank, through torch.distributed.checkpoint) the same weights as an uninterrupted one.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import distributed_worker as worker  # noqa: E402


def test_fsdp_matches_one_process(tmp_path, one_torch_thread, free_port):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launched = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port),
         str(HERE / "distributed_worker.py"), str(tmp_path)], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    try:
        single = worker.single_process()
    finally:
        _, stderr = launched.communicate(timeout=300)
    assert launched.returncode == 0, stderr[-3000:]
    sharded = torch.load(tmp_path / "result.pt", weights_only=False)
    assert sorted(p.name for p in (tmp_path / "checkpoint").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]

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

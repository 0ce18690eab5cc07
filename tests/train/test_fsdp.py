"""FSDP2 on CPU: torch's `fully_shard` (accelerate does not shard on CPU) over 2 gloo processes.

The engine's training module (`ResponseLogprobs`: decoder and LM head inside one forward) gives
the same DPO loss and gradients as one unsharded process, its scoring pass (`score_store`, every
rank in step) the same `[N, R]` table, and a run resumed from the sharded checkpoint (one file per
rank, through torch.distributed.checkpoint) the same weights as an uninterrupted one.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from procs import retry_on_port_conflict, run

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import distributed_worker as worker  # noqa: E402


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory) -> Path:
    """The worker's output directory after one 2-process FSDP2 run."""
    out = tmp_path_factory.mktemp("fsdp")
    proc = retry_on_port_conflict(lambda port: run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
         str(HERE / "distributed_worker.py"), str(out)], env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def single():
    torch.set_num_threads(1)
    return worker.single_process()


@pytest.mark.duration(11)
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


# accelerate's FSDP plugin refuses sync_module_states on CPU (every rank loads the same weights anyway)
FSDP_ON_CPU = ["--use_fsdp", "--fsdp_version", "2", "--fsdp_sync_module_states", "false",
               "--fsdp_cpu_ram_efficient_loading", "false"]


def _train_launch(args: list[str], *, fsdp: bool):
    """`personalign train` itself on 2 CPU processes: `accelerate launch --use_fsdp` (sharded by
    `personalign.train.sharding`, as accelerate cannot shard on CPU) or plain DDP."""
    accelerate = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    return retry_on_port_conflict(lambda port: run(
        [str(accelerate), "launch", *(FSDP_ON_CPU if fsdp else ["--multi_gpu"]), "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
         "-m", "personalign", "train", *args], env=env, timeout=300))


def _reference(data_dir: Path, *, delete: bool = False) -> dict[str, torch.Tensor]:
    """The one reference table cached beside the data (deleted after reading with `delete`)."""
    from safetensors.torch import load_file

    (path,) = data_dir.glob(".personalign-cache/tokens-*/logprobs-*.safetensors")
    table = load_file(str(path))
    if delete:
        path.unlink()
    return table


@pytest.mark.duration(25)
@pytest.mark.parametrize("fsdp", [True], ids=["fsdp"])  # DDP: tests/train/test_distributed.py
def test_personalign_train_sharded_saves_resumes_and_exports_like_one_process(fsdp, tiny_model_dir, tmp_path):
    """The real command under a 2-process launch: stopped after step 1 (our checkpoint code: FSDP shards
    one file per rank, or DDP's one model file), resumed with `resume_from_checkpoint` to step 2 with the
    loss and weights of an uninterrupted one-process run, and `export` of the step-1 checkpoint gives
    the one-process step-1 weights. `fsdp=False` runs the same under DDP.

    The reference log-probs are scored by the sharded model (every rank in step, the 8 records in fewer
    batches than ranks): the table equals the one-process table, and the resumed launch, whose cached
    table is deleted first, scores it again from the starting weights, before loading checkpoint-1."""
    from safetensors.torch import load_file

    from personalign.config import load_config
    from personalign.records.io import write_jsonl
    from personalign.train.checkpoints import export_model
    from personalign.train.config import TrainConfig
    from personalign.train.loop import train

    records = [{"prompt": f"Question {i}: how should I spend my evening? " * (1 + i % 3),
                "chosen": f"Read a good book, friend {i}.", "rejected": "Whatever."} for i in range(8)]
    write_jsonl(records, tmp_path / "pairs.jsonl")
    common = [f"model={tiny_model_dir}", f"data={tmp_path / 'pairs.jsonl'}", "view.view=none", "save_steps=1",
              "logging_steps=1", "learning_rate=1.0", "adam_epsilon=1.0", "max_grad_norm=null", "weight_decay=0.0",
              "max_length=64", "report_to=none", "lr_scheduler_type=constant", "save_total_limit=null"]
    two = tmp_path / "two"
    first = _train_launch([*common, "per_device_train_batch_size=2", "max_steps=1", f"output_dir={two}"], fsdp=fsdp)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "reference log-probs of 8 training records: computed by the sharded model" in " ".join(first.stderr.split())
    sharded_ref = _reference(tmp_path, delete=True)
    shards = two / "checkpoint-1" / "pytorch_model_fsdp_0"
    if fsdp:
        assert sorted(p.name for p in shards.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
        assert not (two / "checkpoint-1" / "model.safetensors").exists()
    else:
        assert not shards.exists() and (two / "checkpoint-1" / "model.safetensors").is_file()
    resumed = _train_launch([*common, "per_device_train_batch_size=2", "max_steps=2", f"output_dir={two}",
                             "resume_from_checkpoint=latest"], fsdp=fsdp)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr and "2 per device × 2 processes" in resumed.stderr
    assert "computed by the sharded model" in " ".join(resumed.stderr.split())
    torch.testing.assert_close(_reference(tmp_path, delete=True), sharded_ref, atol=0, rtol=0)

    torch.set_num_threads(1)
    single = train(load_config(TrainConfig, None, [*common, "per_device_train_batch_size=4", "max_steps=2",
                                                   f"output_dir={tmp_path / 'one'}"]))
    one_ref = _reference(tmp_path)
    torch.testing.assert_close(sharded_ref["logp"], one_ref["logp"], atol=1e-5, rtol=0)
    assert torch.equal(sharded_ref["n_tokens"], one_ref["n_tokens"]) and int(one_ref["n_tokens"].min()) > 0
    losses = {}
    for name in ("one", "two"):
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        losses[name] = {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}
    assert losses["two"][2] == pytest.approx(losses["one"][2], abs=1e-5)

    one = load_file(str(single.final_dir / "model.safetensors"))
    two_final = load_file(str(two / "final" / "model.safetensors"))
    start = load_file(str(tiny_model_dir / "model.safetensors"))
    assert max((one[k] - start[k]).abs().max().item() for k in start) > 1e-3
    assert two_final.keys() == one.keys()
    for name in one:
        torch.testing.assert_close(two_final[name], one[name], atol=1e-5, rtol=0, msg=name)
    exported = load_file(str(export_model(two / "checkpoint-1", tmp_path / "export") / "model.safetensors"))
    at_step1 = load_file(str(export_model(tmp_path / "one" / "checkpoint-1", tmp_path / "export-one")
                             / "model.safetensors"))
    assert exported.keys() == at_step1.keys()
    for name in at_step1:
        torch.testing.assert_close(exported[name], at_step1[name], atol=1e-5, rtol=0, msg=name)

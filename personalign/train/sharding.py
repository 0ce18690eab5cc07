"""FSDP2 where accelerate cannot shard: several CPU processes over gloo.

accelerate shards (FSDP, DeepSpeed) on accelerators only; under `accelerate launch --use_fsdp` on CPU
processes it would fall back to plain data parallelism. There `personalign train` shards the model
itself with torch's `fully_shard` — each decoder layer (the classes in the model's
`_no_split_modules`, as accelerate's transformer-based wrap policy picks them), then the root — and
lets accelerate prepare only the optimizer and the scheduler. The rest of the loop is unchanged.

Checkpoints keep accelerate's FSDP SHARDED_STATE_DICT layout, so `export` gathers them as it gathers
accelerate's: `pytorch_model_fsdp_0/` ({"model": ...}) and `optimizer_0/` ({"optimizer": ...}), each
written by torch.distributed.checkpoint (one file per rank), plus the scheduler and every rank's RNG
state through accelerate's own `save_accelerator_state`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, parse_flag_from_env

from personalign.errors import UserError

FSDP_MODEL_DIR = "pytorch_model_fsdp"  # accelerate's sharded model state: <checkpoint>/pytorch_model_fsdp_<i>/
FSDP_OPTIMIZER_DIR = "optimizer"  # and its optimizer state: <checkpoint>/optimizer_<i>/


def cpu_fsdp_requested(accelerator: Accelerator) -> bool:
    """True for a launch that asks for FSDP (`--use_fsdp`) on several CPU processes."""
    return accelerator.distributed_type == DistributedType.MULTI_CPU and parse_flag_from_env("ACCELERATE_USE_FSDP")


def is_sharded(model: torch.nn.Module) -> bool:
    """True for a module this file sharded (its forwards are collectives: every rank must run them)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The units FSDP shards one by one: the instances of the classes in the model's `_no_split_modules` (as
    accelerate's transformer-based wrap policy picks them)."""
    layers = {name for m in model.modules() for name in (getattr(m, "_no_split_modules", None) or ())}
    return [m for m in model.modules() if type(m).__name__ in layers]


def shard(model: torch.nn.Module, world: int) -> torch.nn.Module:
    """`model` sharded in place over `world` CPU processes: each decoder layer, then the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    blocks = decoder_layers(model)
    if not blocks:
        raise UserError("FSDP on CPU processes shards per decoder layer, but the model names none "
                        "(no _no_split_modules): launch without --use_fsdp")
    mesh = init_device_mesh("cpu", (world,))
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _inner(optimizer: Any) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps the torch one


def save_sharded(accelerator: Accelerator, model, optimizer, scheduler, directory: Path) -> None:
    """Every rank writes its shards of the model and optimizer state, and its RNG state, into `directory`."""
    import torch.distributed.checkpoint as dcp
    from accelerate.checkpointing import save_accelerator_state
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, _inner(optimizer))
    dcp.save({"model": model_state}, checkpoint_id=str(directory / f"{FSDP_MODEL_DIR}_0"))
    dcp.save({"optimizer": optim_state}, checkpoint_id=str(directory / f"{FSDP_OPTIMIZER_DIR}_0"))
    save_accelerator_state(str(directory), [], [], [scheduler], [], accelerator.process_index, accelerator.step)


def load_sharded(accelerator: Accelerator, model, optimizer, scheduler, directory: Path) -> None:
    """The inverse of `save_sharded`: each rank reads its shards (resharded if the world changed)."""
    import torch.distributed.checkpoint as dcp
    from accelerate.checkpointing import load_accelerator_state
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(model, _inner(optimizer))
    wrapped_model, wrapped_optim = {"model": model_state}, {"optimizer": optim_state}
    dcp.load(wrapped_model, checkpoint_id=str(directory / f"{FSDP_MODEL_DIR}_0"))
    dcp.load(wrapped_optim, checkpoint_id=str(directory / f"{FSDP_OPTIMIZER_DIR}_0"))
    set_state_dict(model, _inner(optimizer), model_state_dict=wrapped_model["model"],
                   optim_state_dict=wrapped_optim["optimizer"])
    load_accelerator_state(str(directory), [], [], [scheduler], [], accelerator.process_index)


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state gathered onto the CPU of rank 0 (other ranks get an empty dict); a collective.
    A tied parameter (the LM head sharing the embeddings) is kept once, under its first name."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    tied = {n for n, _ in model.named_parameters(remove_duplicate=False)} - {n for n, _ in model.named_parameters()}
    return {k: v for k, v in state.items() if k not in tied}

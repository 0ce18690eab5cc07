"""Building the model a run trains: the starting model (causal LM or reward model), its LoRA adapters
inside the packed scorer, the attention kernel, and accelerate's preparation (with the optimizer)."""
from __future__ import annotations

import torch
from accelerate import Accelerator, DistributedType
from rich.console import Console

from personalign.errors import UserError
from personalign.models.loading import load_model
from personalign.models.lora import apply_lora
from personalign.models.rewards import ResponseRewards, load_reward_model
from personalign.models.scorer import ResponseLogprobs
from personalign.train.config import TrainConfig
from personalign.train.schedule import StepPlan, build_optimizer
from personalign.train.sharding import cpu_fsdp_requested, shard


def with_kernel(cfg: TrainConfig, device_type: str, console: Console) -> TrainConfig:
    """`cfg` with the attention kernel the packed scorer runs on this device (flex_attention, which has no
    backward pass on CPU, refused there)."""
    kernel = cfg.scoring_kernel(cfg.max_length, device_type)
    if kernel != cfg.attn_implementation:
        console.print(f"attention kernel: {kernel} (max_length {cfg.max_length} on {device_type})")
        cfg = cfg.model_copy(update={"attn_implementation": kernel})
    if cfg.attn_implementation == "flex_attention" and device_type == "cpu":
        raise UserError("attn_implementation 'flex_attention' has no backward pass on CPU (torch): train with sdpa "
                        "here; flex_attention trains on a GPU and scores anywhere", option="attn_implementation")
    return cfg


def prepare(accelerator: Accelerator, model: torch.nn.Module, cfg: TrainConfig, plan: StepPlan) -> tuple:
    """(model, optimizer, scheduler) prepared by accelerate; for FSDP on CPU processes, which accelerate
    cannot shard, the model is sharded here (`sharding.shard`) and only the optimizer and scheduler are
    prepared."""
    if not cpu_fsdp_requested(accelerator):
        return accelerator.prepare(model, *build_optimizer(model, cfg, plan.total))
    if cfg.lora is not None:
        raise UserError("FSDP on CPU processes shards full fine-tuning only: launch a LoRA run without --use_fsdp",
                        option="lora")
    model = shard(model, accelerator.num_processes)
    return (model, *accelerator.prepare(*build_optimizer(model, cfg, plan.total)))


def load_device(accelerator: Accelerator, cfg: TrainConfig) -> torch.device | str:
    """Where the starting weights load: the CPU when the launch shards them (FSDP, DeepSpeed ZeRO-3), whose
    preparation moves each process's shard to its device, so no device holds the whole model; else the
    process's device (quantized weights load there in every case)."""
    plugin = accelerator.state.deepspeed_plugin
    zero3 = plugin is not None and plugin.zero_stage == 3
    sharded = accelerator.distributed_type == DistributedType.FSDP or zero3 or cpu_fsdp_requested(accelerator)
    return "cpu" if sharded and not cfg.quantized else accelerator.device


def load_policy(cfg, name: str | None = None, **kwargs):
    """(model, tokenizer) a run starts from: a reward model (score head) for loss rm, else the causal LM."""
    load = load_reward_model if cfg.loss == "rm" else load_model
    return load(cfg.model if name is None else name, **cfg.load_kwargs(), **kwargs)


def trainable_module(model, cfg) -> torch.nn.Module:
    """The module accelerate prepares: `model` with the run's LoRA adapters (if any) inside the packed
    scorer of its objective (`ResponseRewards` for loss rm, else `ResponseLogprobs`)."""
    reward = cfg.loss == "rm"
    if cfg.lora is not None:
        model = apply_lora(model, cfg.lora, task_type="SEQ_CLS" if reward else "CAUSAL_LM")
    return ResponseRewards(model) if reward else ResponseLogprobs(model, chunk_size=cfg.logits_chunk_size)


def trainable_only(model: torch.nn.Module):
    """A save-state pre-hook for accelerate that keeps only `model`'s trainable weights (LoRA
    adapters) in each saved state dict: a checkpoint then holds the adapters and the optimizer
    state, not another copy of the frozen base model."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}

    def hook(models, weights, output_dir) -> None:
        for state in weights:
            for key in [k for k in state if k.removeprefix("module.") not in trainable]:
                del state[key]

    return hook

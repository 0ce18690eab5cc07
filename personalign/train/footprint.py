"""The GPU memory footprint of a training run per process, from the model built on the meta device (its
config only: no weights are read and nothing is allocated).

Per rank, for the engine as it trains (AdamW keeps two moment tensors in the parameters' dtype;
gradients are in the parameters' dtype; LoRA makes only the adapters trainable):

| strategy | parameters | gradients | optimizer states |
|---|---|---|---|
| `ddp` | all | all trainable | 2 × trainable |
| `zero2` (DeepSpeed ZeRO-2) | all | trainable / world | 2 × trainable / world |
| `fsdp` (FSDP full shard) and `zero3` (ZeRO-3) | all / world | trainable / world | 2 × trainable / world |

each times the bytes of the weight dtype; shards round up. The reference pass (dpo, kto) is scored by
the same model before the first step, so it adds no copy: a process holds the whole model (`ddp`,
`zero2`), or its shard plus what is gathered at a time (`fsdp`, `zero3`): the root unit (embeddings,
final norm, LM head: kept gathered through a forward) and two decoder layers (the one running and the
one prefetched), an upper bound. Activations and framework buffers come on top and are not counted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from personalign.models.loading import resolve_model
from personalign.models.lora import apply_lora
from personalign.train.config import TrainConfig
from personalign.train.sharding import decoder_layers

STRATEGIES = ("ddp", "zero2", "fsdp", "zero3")
ADAM_STATES = 2  # exp_avg and exp_avg_sq


@dataclass(frozen=True, slots=True)
class ModelSize:
    """Parameter counts of a model and the bytes of one element of its weights."""

    parameters: int
    trainable: int
    bytes_per_element: int
    largest_layer: int = 0
    """Parameters of the largest decoder layer (an FSDP unit)."""
    outside_layers: int = 0
    """Parameters in no decoder layer (the root unit: embeddings, final norm, LM head)."""


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """Bytes per rank under one strategy."""

    strategy: str
    world_size: int
    parameter_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    reference_bytes: int
    """Weights a process holds while the reference pass scores (see the module docstring)."""

    @property
    def total_bytes(self) -> int:
        return self.parameter_bytes + self.gradient_bytes + self.optimizer_bytes


def model_size(cfg: TrainConfig) -> ModelSize:
    """Count the configured model's parameters (and trainable ones, with LoRA) on the meta device."""
    config = AutoConfig.from_pretrained(resolve_model(cfg.model), trust_remote_code=cfg.trust_remote_code)
    named = getattr(config, "dtype", None) or "float32"
    dtype = getattr(torch, str(named).removeprefix("torch.")) if cfg.dtype == "auto" else getattr(torch, cfg.dtype)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=cfg.trust_remote_code)
    if cfg.lora is not None:
        model = apply_lora(model, cfg.lora)
    parameters = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    layers = [sum(p.numel() for p in layer.parameters()) for layer in decoder_layers(model)]
    return ModelSize(parameters, trainable, torch.empty((), dtype=dtype).element_size(), max(layers, default=0),
                     parameters - sum(layers))


def memory_plan(size: ModelSize, strategy: str, world_size: int) -> MemoryPlan:
    """Bytes per rank for parameters, gradients and AdamW states (see the module table)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if world_size < 1:
        raise ValueError(f"world_size must be positive, got {world_size}")
    b = size.bytes_per_element
    shard = 1 if strategy == "ddp" else world_size
    params = size.parameters if strategy in ("ddp", "zero2") else math.ceil(size.parameters / world_size)
    grads = math.ceil(size.trainable / shard)
    states = ADAM_STATES * grads
    gathered = size.outside_layers + 2 * size.largest_layer
    reference = params if strategy in ("ddp", "zero2") else min(size.parameters, params + gathered)
    return MemoryPlan(strategy, world_size, params * b, grads * b, states * b, reference * b)

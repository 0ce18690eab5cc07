"""The run's schedule: the data order per epoch, each step's micro-batches per process, how many steps,
the optimizer and its learning-rate schedule, and when to save and evaluate."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformers import get_scheduler

from personalign.train.config import TrainConfig


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))


def step_micro_batches(order: torch.Tensor, k: int, *, per_device: int, accumulation: int, rank: int,
                       world: int) -> list[list[int]]:
    """This process's micro-batches (record indices) for step `k` of an epoch with permutation `order`."""
    micro = per_device * world
    window = torch.arange(k * micro * accumulation, (k + 1) * micro * accumulation)
    idx = order[window % len(order)].tolist()
    return [idx[j * micro + rank * per_device : j * micro + (rank + 1) * per_device] for j in range(accumulation)]


@dataclass(frozen=True, slots=True)
class StepPlan:
    """How many optimizer steps a run takes, and how many records each takes."""

    per_device: int
    world: int
    accumulation: int
    steps_per_epoch: int
    total: int

    @property
    def global_batch(self) -> int:
        return self.per_device * self.world * self.accumulation

    @classmethod
    def of(cls, cfg: TrainConfig, n_records: int, world: int) -> StepPlan:
        per_device, ga = cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps
        steps_per_epoch = math.ceil(n_records / (per_device * world * ga))
        total = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * steps_per_epoch)
        return cls(per_device, world, ga, steps_per_epoch, total)


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, total_steps: int):
    """AdamW (no weight decay on biases and norms) and the warmup + decay schedule over `total_steps`."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.learning_rate,
                                  betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon)
    min_lr = {"min_lr_rate": cfg.min_lr_rate} if cfg.lr_scheduler_type == "cosine_with_min_lr" else None
    warmup = cfg.warmup_steps or math.ceil(cfg.warmup_ratio * total_steps)
    scheduler = get_scheduler(cfg.lr_scheduler_type, optimizer, num_warmup_steps=warmup,
                              num_training_steps=total_steps, scheduler_specific_kwargs=min_lr)
    return optimizer, scheduler


def due(cfg: TrainConfig, done: int, plan: StepPlan) -> tuple[bool, bool]:
    """(save a checkpoint, evaluate) after optimizer step `done`, by save_strategy and eval_strategy."""
    epoch_end = done % plan.steps_per_epoch == 0

    def at(strategy: str, every: int) -> bool:
        return strategy == "steps" and done % every == 0 or strategy == "epoch" and epoch_end

    return at(cfg.save_strategy, cfg.save_steps), at(cfg.eval_strategy, cfg.eval_steps)

"""What a run trains and evaluates on: token stores of the training and eval records, with reference
log-probs from the cache (scored with the starting weights) where the objective needs them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedType
from rich.console import Console

from personalign.errors import EmptyError
from personalign.models.refcache import cached_table, scores_path, table_fits
from personalign.models.scorer import ScoreTable, score_store
from personalign.tokenstore.store import TokenStore, load_store
from personalign.train.collate import KtoRows, rewards_tensor, run_specs
from personalign.train.config import TrainConfig
from personalign.train.sharding import is_sharded


@dataclass(frozen=True)
class EvalSet:
    """The eval rows with their reference log-probs (None for reference-free objectives) and rewards."""

    store: TokenStore | KtoRows
    ref: ScoreTable | None
    rewards: torch.Tensor | None


@dataclass(frozen=True)
class TrainData:
    """The training rows (the token store; for kto with its KL partners), their reference log-probs
    (objectives that need one), the store's counts, and the eval set."""

    store: TokenStore | KtoRows
    ref: ScoreTable | None
    counts: dict[str, int]
    eval: EvalSet | None


def scoring_module(model: torch.nn.Module, accelerator: Accelerator) -> torch.nn.Module:
    """The module to score with, without gradients: the prepared one where every forward runs collectives
    (FSDP, DeepSpeed: all ranks score in step), else the unwrapped one (no DDP hooks per forward)."""
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED) or is_sharded(model)
    return model if sharded else accelerator.unwrap_model(model)


def score(model, store: TokenStore | KtoRows, cfg: TrainConfig, accelerator: Accelerator, journal: Path | None = None
          ) -> ScoreTable:
    """`[N, R]` log-probs of every row of `store`, sharded over the processes (all get the table)."""
    return score_store(scoring_module(model, accelerator), store, state=accelerator,
                       max_tokens_per_batch=cfg.max_tokens_per_batch, batch_size=cfg.per_device_eval_batch_size,
                       journal=journal, progress=accelerator.is_main_process)


def reference_table(model, store: TokenStore | KtoRows, model_path: str, cfg: TrainConfig, accelerator: Accelerator
                    ) -> tuple[ScoreTable, bool]:
    """Reference log-probs of `store`, from the cache or scored now with `model`; (table, hit)."""
    table, hit = cached_table(scores_path(store, model_path, cfg, bf16_autocast=cfg.bf16),
                              lambda journal: score(model, store, cfg, accelerator, journal),
                              write=accelerator.is_main_process, fits=table_fits(store),
                              meta={"model": model_path, "store": store.path.name, "kernel": cfg.attn_implementation})
    accelerator.wait_for_everyone()
    return table, hit


def load_data(cfg: TrainConfig, model, tokenizer, model_path: str, accelerator: Accelerator, console: Console
              ) -> TrainData:
    """Token stores of the training (and eval) records, built once by the main process, with reference
    log-probs from the cache (scored with the starting weights) where the loss or the evaluation needs them."""
    specs = run_specs(cfg)
    with accelerator.main_process_first():
        store, hit = load_store(*specs[0], tokenizer, num_proc=cfg.dataset_num_proc,
                                progress=accelerator.is_main_process)
    c = store.counts
    if cfg.max_length is not None and c["responses_cut"] == c["records"]:
        raise EmptyError(f"every one of the {c['records']} records is too long for max_length={cfg.max_length}: its "
                         "responses would be cut even after dropping history and cutting the prompt; raise max_length",
                         file=cfg.data)
    console.print(f"token store {store.path}: {c['records']} records, {c['tokens']:,} tokens, "
                  f"{c['truncated_for_length']} truncated, {c['rejected']} rejected ({'cache' if hit else 'built'})")
    counts = {"records": c["records"], "rejected": c["rejected"], "truncated_for_length": c["truncated_for_length"],
              **{k: v for k, v in c.items() if k.startswith("view_") and k != "view_records"}}
    rows = KtoRows(store) if cfg.loss == "kto" else store
    ref = None
    if cfg.needs_reference:
        ref, hit = reference_table(model, rows, model_path, cfg, accelerator)
        console.print(f"reference log-probs of {len(store)} training records: {'cache' if hit else 'computed'}")
    if cfg.eval_data is None:
        return TrainData(rows, ref, counts, None)
    with accelerator.main_process_first():
        eval_store, _ = load_store(*specs[1], tokenizer, num_proc=cfg.dataset_num_proc,
                                   progress=accelerator.is_main_process)
    eval_rows = KtoRows(eval_store) if cfg.loss == "kto" else eval_store
    eval_ref = reference_table(model, eval_rows, model_path, cfg, accelerator)[0] if cfg.needs_reference else None
    rewards = rewards_tensor(eval_rows.rewards(range(len(eval_store))), eval_rows.width)
    return TrainData(rows, ref, counts, EvalSet(eval_rows, eval_ref, rewards))

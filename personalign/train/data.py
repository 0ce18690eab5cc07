"""What a run trains and evaluates on: token stores of the training and eval records, with reference
log-probs from the cache (scored with the starting weights) where the objective needs them.

The reference is scored by the prepared model, before the first step (`with_reference`): under FSDP or
ZeRO-3 that is the sharded model, so no process holds a whole copy for it; its weights are then still
the starting ones (a resumed run loads its checkpoint afterwards), and LoRA adapters are disabled."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedType
from rich.console import Console

from personalign.errors import EmptyError
from personalign.models.logprobs import unwrap
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


def collective(model: torch.nn.Module, accelerator: Accelerator) -> bool:
    """Whether every forward of the prepared `model` runs collectives (FSDP, DeepSpeed): all ranks score in step."""
    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED) or is_sharded(model)


def score(model, store: TokenStore | KtoRows, cfg: TrainConfig, accelerator: Accelerator, journal: Path | None = None
          ) -> ScoreTable:
    """`[N, R]` log-probs of every row of `store`, sharded over the processes (all get the table): by the prepared
    module where its forwards are collectives, else by the unwrapped one (no DDP hooks per forward)."""
    sharded = collective(model, accelerator)
    return score_store(model if sharded else accelerator.unwrap_model(model), store, state=accelerator,
                       max_tokens_per_batch=cfg.max_tokens_per_batch, batch_size=cfg.per_device_eval_batch_size,
                       journal=journal, progress=accelerator.is_main_process, collective=sharded)


def without_adapters(model: torch.nn.Module) -> contextlib.AbstractContextManager:
    """A context in which `model` (prepared or not) scores without its LoRA adapters: the base model."""
    inner = getattr(unwrap(model), "model", None)
    return inner.disable_adapter() if hasattr(inner, "disable_adapter") else contextlib.nullcontext()


def reference_table(model, store: TokenStore | KtoRows, model_path: str, cfg: TrainConfig, accelerator: Accelerator
                    ) -> tuple[ScoreTable, bool]:
    """Reference log-probs of `store`, from the cache or scored now with `model`'s starting weights (its LoRA
    adapters disabled); (table, hit)."""
    def compute(journal: Path) -> ScoreTable:
        with without_adapters(model):
            return score(model, store, cfg, accelerator, journal)

    table, hit = cached_table(scores_path(store, model_path, cfg, bf16_autocast=cfg.bf16), compute,
                              write=accelerator.is_main_process, fits=table_fits(store),
                              meta={"model": model_path, "store": store.path.name, "kernel": cfg.attn_implementation})
    accelerator.wait_for_everyone()
    return table, hit


def load_data(cfg: TrainConfig, tokenizer, accelerator: Accelerator, console: Console) -> TrainData:
    """Token stores of the training (and eval) records, built once by the main process; the reference
    log-probs come later (`with_reference`)."""
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
    if cfg.eval_data is None:
        return TrainData(rows, None, counts, None)
    with accelerator.main_process_first():
        eval_store, _ = load_store(*specs[1], tokenizer, num_proc=cfg.dataset_num_proc,
                                   progress=accelerator.is_main_process)
    eval_rows = KtoRows(eval_store) if cfg.loss == "kto" else eval_store
    rewards = rewards_tensor(eval_rows.rewards(range(len(eval_store))), eval_rows.width)
    return TrainData(rows, None, counts, EvalSet(eval_rows, None, rewards))


def with_reference(data: TrainData, model, model_path: str, cfg: TrainConfig, accelerator: Accelerator,
                   console: Console) -> TrainData:
    """`data` with the reference log-probs of its training and eval rows where the objective needs them, from
    the cache or scored by `model` — the prepared model, before the first step and before a checkpoint is
    loaded — with its LoRA adapters disabled."""
    if not cfg.needs_reference:
        return data
    started = time.perf_counter()
    ref, hit = reference_table(model, data.store, model_path, cfg, accelerator)
    eval_ref = None if data.eval is None else reference_table(model, data.eval.store, model_path, cfg, accelerator)[0]
    how = "computed by the sharded model" if collective(model, accelerator) else "computed"
    cost = f" in {time.perf_counter() - started:.1f} s"
    if torch.cuda.is_available():  # the pass's own peak; training's is measured from here
        cost += f", peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB per process"
        torch.cuda.reset_peak_memory_stats()
    console.print(f"reference log-probs of {len(data.store)} training records"
                  f"{'' if data.eval is None else f' and {len(data.eval.store)} eval records'}: "
                  f"{'cache' if hit else how + cost}", highlight=False)
    return replace(data, ref=ref, eval=None if data.eval is None else replace(data.eval, ref=eval_ref))

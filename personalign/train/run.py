"""The run directory: what is checked before a model loads, resuming from a checkpoint, the config,
metrics log and trackers, and the final model."""
from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import torch
from accelerate import Accelerator
from rich.console import Console
from rich.progress import Progress

from personalign.config import dump_config
from personalign.errors import CorruptFileError
from personalign.files import check_output_dir, write_text
from personalign.models.card import push_to_hub, write_provenance
from personalign.models.loading import check_model_dir
from personalign.records.io import check_source
from personalign.train.checkpoints import (
    CONFIG_FILE,
    FINAL_DIR,
    METRICS_FILE,
    TRAIN_OUTPUTS,
    read_state,
    resolve_checkpoint,
    save_final,
)
from personalign.train.config import TrainConfig
from personalign.train.schedule import StepPlan
from personalign.train.sharding import is_sharded, load_sharded

RESUME_KEYS = ("step", "global_batch", "records")


def check_run(cfg: TrainConfig) -> Path | None:
    """Everything about a run that can be checked before a model loads: the data files, the model
    directory, the output directory (a directory of other files needs `overwrite_output_dir`) and the
    checkpoint to resume from (its trainer state must be readable). Returns that checkpoint."""
    check_source(cfg.data, option="data")
    if cfg.eval_data is not None:
        check_source(cfg.eval_data, option="eval_data")
    check_model_dir(cfg.model, option="model", kind="any" if cfg.loss == "rm" else "causal")  # rm: a causal LM or an RM
    check_output_dir(cfg.output_dir, inputs=[cfg.data, cfg.eval_data], own=TRAIN_OUTPUTS,
                     overwrite=cfg.overwrite_output_dir, option="output_dir")
    if cfg.resume_from_checkpoint is None:
        return None
    checkpoint = resolve_checkpoint(cfg.resume_from_checkpoint, cfg.output_dir)
    read_state(checkpoint, RESUME_KEYS)
    return checkpoint


def resume_run(accelerator: Accelerator, checkpoint: Path, plan: StepPlan, n_records: int, prepared: tuple, *,
               strict: bool = True) -> int:
    """Load a checkpoint's model, optimizer, schedule and RNG state into `prepared` (model, optimizer,
    scheduler); returns its step. `strict=False` for adapter-only (LoRA) checkpoints: the frozen base
    weights are the ones already loaded."""
    state = read_state(checkpoint)
    if (state["global_batch"], state["records"]) != (plan.global_batch, n_records):
        raise ValueError(f"{checkpoint} was saved with global batch {state['global_batch']} on "
                         f"{state['records']} records; this run has {plan.global_batch} on {n_records}")
    try:
        if is_sharded(prepared[0]):
            load_sharded(accelerator, *prepared, checkpoint)
        else:
            accelerator.load_state(checkpoint, strict=strict)
    except Exception as e:  # noqa: BLE001 - torch/safetensors raise many types for a damaged file
        raise CorruptFileError(f"cannot load the checkpoint ({type(e).__name__}: {e}); resume from another "
                               "checkpoint or delete this one", file=checkpoint) from None
    return state["step"]


def open_run(accelerator: Accelerator, cfg: TrainConfig, out: Path, start: int) -> None:
    """The run directory (its config, its metrics cut back to `start`) and the trackers."""
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, out / CONFIG_FILE)
        _truncate_metrics(out / METRICS_FILE, start)
    if cfg.report_to:
        accelerator.init_trackers("personalign", config=_flat(cfg.model_dump(mode="json")))


def close_run(accelerator: Accelerator, model, tokenizer, cfg: TrainConfig, out: Path, console: Console,
              card: dict) -> Path:
    """Save the final model with its provenance card (and push it when asked); returns its directory."""
    final_dir = save_final(accelerator, model, tokenizer, out / FINAL_DIR)
    if accelerator.is_main_process:
        write_provenance(final_dir, card)
    accelerator.end_training()
    console.print(f"final model saved to {final_dir}")
    if cfg.push_to_hub and accelerator.is_main_process:
        repo = cfg.hub_model_id or out.resolve().name
        console.print(f"pushed to {push_to_hub(final_dir, repo, private=cfg.hub_private_repo)}")
    return final_dir


class MetricWindow:
    """Training metrics summed since the last log line, averaged over steps and processes on `flush`."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.steps, self.tokens, self.started = 0, 0, time.perf_counter()

    def add(self, metrics: dict[str, float], divisor: int = 1) -> None:
        for name, value in metrics.items():
            self.sums[name] += float(value) / divisor

    def flush(self, accelerator: Accelerator, *, lr: float, epoch: float, global_batch: int) -> dict[str, float]:
        """`train/<name>` means of the window plus learning rate, epoch and throughput (samples and
        non-padding tokens per second over all processes; peak accelerator memory on CUDA); starts a new window."""
        names = sorted(self.sums)
        means = accelerator.reduce(torch.tensor([self.sums[n] for n in names], device=accelerator.device),
                                   reduction="mean") / self.steps
        tokens = accelerator.reduce(torch.tensor(float(self.tokens), device=accelerator.device), reduction="sum")
        elapsed = time.perf_counter() - self.started
        metrics = {f"train/{n}": float(v) for n, v in zip(names, means)}
        metrics |= {"train/learning_rate": lr, "train/epoch": epoch,
                    "train/samples_per_second": self.steps * global_batch / elapsed,
                    "train/tokens_per_second": float(tokens) / elapsed}
        if torch.cuda.is_available():
            metrics["train/peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        self._reset()
        return metrics


def checkpoint_metric(eval_metrics: dict[str, float], train_losses: list[float]) -> dict | None:
    """What ranks checkpoints: eval accuracy, else eval loss, else the mean train loss since the last save."""
    if eval_metrics and "eval/accuracy" in eval_metrics:
        return {"name": "eval/accuracy", "value": eval_metrics["eval/accuracy"], "greater_is_better": True}
    if eval_metrics:
        return {"name": "eval/loss", "value": eval_metrics["eval/loss"], "greater_is_better": False}
    if train_losses:
        return {"name": "train/loss", "value": sum(train_losses) / len(train_losses), "greater_is_better": False}
    return None


def log_metrics(accelerator: Accelerator, out: Path, step: int, metrics: dict[str, float], progress: Progress) -> None:
    """One console line, one `metrics.jsonl` row and the tracker scalars (main process)."""
    accelerator.log(metrics, step=step)
    if not accelerator.is_main_process:
        return
    with open(out / METRICS_FILE, "a") as f:
        f.write(json.dumps({"step": step, **metrics}) + "\n")
    short = {"loss": "loss", "rewards/margins": "margin", "rewards/accuracies": "acc", "accuracy": "align-acc",
             "pro/accuracy": "acc", "grad_norm": "|g|", "learning_rate": "lr", "samples_per_second": "ex/s",
             "tokens_per_second": "tok/s"}
    parts = []
    for name, value in metrics.items():
        base = name.partition("/")[2]
        if base in short:
            parts.append(f"{short[base]} {value:.3g}" if base != "learning_rate" else f"lr {value:.2e}")
    split = next(iter(metrics)).partition("/")[0]
    progress.console.print(f"[dim]step {step}[/] {split}: " + " · ".join(parts), highlight=False)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop rows logged after `step` (a resumed run logs them again); start fresh at step 0."""
    if step == 0 or not path.is_file():
        path.unlink(missing_ok=True)
        return
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                rows.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    write_text(path, "".join(r + "\n" for r in rows))


def _flat(d: dict, prefix: str = "") -> dict:
    """Nested config -> flat {a.b: scalar} for TensorBoard hparams (None and lists as text)."""
    flat = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat |= _flat(v, f"{prefix}{k}.")
        else:
            flat[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return flat

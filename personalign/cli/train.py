"""`personalign train` and `personalign export`: thin wrappers over `personalign.train`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from personalign.cli._common import ConfigFile, Overrides, command_config, console


def _config_keys() -> str:
    """Every TrainConfig key with type, default and description, for `train --help`."""
    from personalign.config import config_reference
    from personalign.train.config import ALIASES, TrainConfig

    rows = [f"* `{k}` ({t}; {'required' if d == '(required)' else 'default ' + d}): {' '.join(text.split())}"
            for k, t, d, text in config_reference(TrainConfig)]
    aliases = [f"* `{alias}`: alias of `{field}`; {text}" for alias, (field, text) in ALIASES.items()]
    return "\n".join(["**Config keys** (in the --config YAML file, or key=value overrides; nested keys dotted):", "",
                      *rows, "", "**TRL names read as aliases:**", "", *aliases])


EPILOGS = {"train": _config_keys}


def train(
    config: ConfigFile = None,
    overrides: Overrides = None,
    print_config: Annotated[bool, typer.Option(
        "--print-config", help="Print the merged config (file, then overrides) as YAML and exit; loads nothing.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Load nothing, train nothing: print the memory plan per process (parameters, gradients, "
        "optimizer states) under DDP, ZeRO-2, FSDP and ZeRO-3, from the model built on the meta device.")] = False,
    num_processes: Annotated[int, typer.Option(
        "--num-processes", min=1, help="--dry-run: the processes (GPUs) the plan shares the model over.")] = 8,
) -> None:
    """Train a policy with DPO, SFT or PRO; resumable, and scales with `accelerate launch -m personalign train`."""
    from personalign.train.config import TrainConfig
    from personalign.train.loop import train as run

    cfg = command_config(TrainConfig, config, {}, overrides)
    if print_config:
        import yaml

        typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), nl=False)
        return
    if dry_run:
        _print_memory_plan(cfg, num_processes)
        return
    result = run(cfg)
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    table = Table(title=f"train · {result.output_dir}")
    table.add_column("")
    table.add_column("value", justify="right")
    rows = [("steps", result.global_step), ("epochs", f"{result.epoch:.2f}"), ("time", f"{result.seconds:.0f} s")]
    rows += [(k.replace("_", " "), v) for k, v in result.counts.items() if v]
    rows += [(k, f"{v:.4g}") for k, v in (result.train_metrics | result.eval_metrics).items()]
    rows += [("resumed from", result.resumed_from), ("best checkpoint", result.best_checkpoint),
             ("final model", result.final_dir)]
    for name, value in rows:
        if value is not None:
            table.add_row(name, str(value))
    console.print(table)


def export(
    source: Annotated[str, typer.Argument(help="A run directory, its final/ directory, or a checkpoint-<step>/ directory.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the exported HF model.")],
    merge: Annotated[bool, typer.Option("--merge", help="Fold LoRA adapters into the base model (a full model).")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an --out directory that holds something other than an earlier export.")] = False,
) -> None:
    """Write a trained policy as a Hugging Face model directory (adapter, or merged full model).

    The model is built aside and replaces --out whole; an earlier export there is replaced, anything else
    needs --overwrite."""
    from personalign.train.checkpoints import export_model

    path = export_model(source, out, merge=merge, overwrite=overwrite)
    kind = "LoRA adapter" if (path / "adapter_config.json").is_file() else "full model"
    console.print(f"exported {kind} to {path}", highlight=False)


def _print_memory_plan(cfg, world_size: int) -> None:
    from personalign.train.footprint import STRATEGIES, memory_plan, model_size

    size = model_size(cfg)
    gib = 1024 ** 3
    console.print(f"{cfg.model or 'the embedded default model'}: {size.parameters:,} parameters, {size.trainable:,} "
                  f"trainable ({'LoRA' if cfg.lora else 'full fine-tuning'}), {size.bytes_per_element} bytes each "
                  f"(dtype {cfg.dtype}); AdamW; activations not included", highlight=False)
    table = Table(title=f"memory per process, {world_size} processes (GiB)")
    reference = ("reference pass",) if cfg.needs_reference else ()
    for col in ("strategy", "parameters", "gradients", "optimizer states", "total", *reference):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for strategy in STRATEGIES:
        plan = memory_plan(size, strategy, world_size)
        figures = (plan.parameter_bytes, plan.gradient_bytes, plan.optimizer_bytes, plan.total_bytes)
        table.add_row(strategy, *(f"{b / gib:.2f}" for b in figures + (plan.reference_bytes,)[:len(reference)]))
    console.print(table)
    if reference:
        console.print(f"reference pass ({cfg.loss}): scored by the training model before the first step (LoRA "
                      "adapters disabled), no second copy; under fsdp and zero3 a process holds its shard, the root "
                      f"unit and two decoder layers at most, not the whole {size.parameters * size.bytes_per_element / gib:.2f} GiB",
                      highlight=False)

"""`personalign train` and `personalign export`: thin wrappers over `personalign.train`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from accelerate import PartialState
from rich.table import Table

from personalign.cli._common import ConfigFile, Overrides, command_config, console


def train(
    config: ConfigFile = None,
    overrides: Overrides = None,
) -> None:
    """Train a policy with DPO, SFT or PRO; resumable, and scales with `accelerate launch -m personalign train`."""
    from personalign.train.config import TrainConfig
    from personalign.train.loop import train as run

    result = run(command_config(TrainConfig, config, {}, overrides))
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

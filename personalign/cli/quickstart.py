"""`personalign quickstart`: the whole method on bundled data and the embedded model."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from personalign.cli._common import command_config, console
from personalign.quickstart import QuickstartConfig, QuickstartSize, run_quickstart


def quickstart(
    out: Annotated[Path, typer.Option(help="Directory for data, results and the report.")] = Path("runs/quickstart"),
    size: Annotated[QuickstartSize, typer.Option(help="tiny: a CI-sized run.")] = "default",
    model: Annotated[str | None, typer.Option(help="Model directory (default: the embedded SmolLM2-135M-Instruct).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for synthetic data.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Run in a directory that holds other files.")] = False,
) -> None:
    """Run the whole method offline: data, validation, user models (the headline), views, personas, LoRA DPO,
    accuracy before/after, generations, report."""
    cfg = command_config(QuickstartConfig, None, {"out_dir": out, "size": size, "model": model, "seed": seed,
                                                  "overwrite": overwrite}, None)
    run_quickstart(cfg, console)

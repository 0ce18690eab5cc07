"""`personalign quickstart`: the whole method on bundled data and the embedded model."""
from __future__ import annotations

from pathlib import Path

import typer

from personalign.cli._common import command_config, console
from personalign.quickstart import QuickstartConfig, QuickstartSize, run_quickstart


def quickstart(
    out: Path = typer.Option(Path("runs/quickstart"), help="Directory for data, results and the report."),
    size: QuickstartSize = typer.Option("default", help="tiny: a CI-sized run."),
    model: str | None = typer.Option(None, help="Model directory (default: the embedded SmolLM2-135M-Instruct)."),
    seed: int = typer.Option(0, help="Seed for synthetic data."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Run in a directory that holds other files."),
) -> None:
    """Run the whole method offline: data, validation, user models (the headline), views, personas, LoRA DPO, accuracy before/after, generations, report."""
    cfg = command_config(QuickstartConfig, None, {"out_dir": out, "size": size, "model": model, "seed": seed,
                                                  "overwrite": overwrite}, None)
    run_quickstart(cfg, console)

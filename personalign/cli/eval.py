"""`personalign eval ...`: alignment accuracy (generation and judging join later)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from accelerate import PartialState
from rich.table import Table

from personalign.cli._common import cli_errors, console
from personalign.config import load_config
from personalign.eval.alignment import AccuracyConfig, evaluate_accuracy, write_accuracy

app = typer.Typer(no_args_is_help=True)


@app.command("accuracy")
@cli_errors
def accuracy(
    data: Annotated[Optional[str], typer.Option("--data", help="Pairs to evaluate (jsonl/json/parquet/dataset dir).")] = None,
    policy: Annotated[Optional[str], typer.Option(help="Policy model dir or name (default: embedded SmolLM2).")] = None,
    reference: Annotated[Optional[str], typer.Option(help="Reference model; omit (or = policy) for raw log-prob accuracy.")] = None,
    view: Annotated[Optional[str], typer.Option(help="none | ica | pba | persona | demo")] = None,
    template: Annotated[Optional[str], typer.Option(help="chat | alignx | alignx-eval | plain")] = None,
    persona_source: Annotated[Optional[str], typer.Option(help="persona view: chosen | gold | rejected | retrieved")] = None,
    max_length: Annotated[Optional[int], typer.Option(help="Token budget for prompt + response.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Evaluate only the first N records.")] = None,
    out: Annotated[Path, typer.Option(help="Directory for accuracy.json, accuracy.md, scores.jsonl.")] = Path("results/accuracy"),
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config (AccuracyConfig).")] = None,
    overrides: Annotated[Optional[list[str]], typer.Argument(help="key=value overrides, e.g. view.seed=1")] = None,
) -> None:
    """Alignment accuracy overall and per slice with bootstrap 95% intervals.

    Scales out with `accelerate launch --num_processes N -m personalign eval accuracy ...`.
    """
    opts = {"data": data, "policy": policy, "reference": reference, "max_length": max_length, "limit": limit,
            "view.view": view, "view.template": template, "view.persona_source": persona_source}
    items = [f"{k}={v}" for k, v in opts.items() if v is not None] + list(overrides or [])
    cfg = load_config(AccuracyConfig, config, items)
    result = evaluate_accuracy(cfg)
    if not PartialState().is_main_process:
        return
    js, md, _ = write_accuracy(result, out)
    title = "alignment accuracy" if result.mode == "alignment" else "RAW log-prob accuracy (policy = reference)"
    table = Table(title=f"{title} · view {cfg.view.view}")
    for col in ("slice", "n", "accuracy", "95% CI"):
        table.add_column(col, justify="right" if col != "slice" else "left")
    for name, e in result.estimates.items():
        table.add_row(name, str(e.n), f"{e.value:.3f}", f"[{e.low:.3f}, {e.high:.3f}]")
    console.print(table)
    console.print(f"wrote {js} and {md}")

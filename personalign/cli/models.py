"""`personalign models ...`: list and prepare models."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from personalign.cli._common import console, new_app
from personalign.files import personalign_home
from personalign.models.loading import (
    DEFAULT_ALIASES,
    DEFAULT_MODEL,
    cached_models,
    default_model_dir,
    is_prepared,
    load_model,
    model_fingerprint,
    prepare_default_model,
)

app = new_app()


def _size(path: Path) -> str:
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0
    return f"{total / 1e6:.0f} MB" if total else "-"


@app.command("list")
def list_models() -> None:
    """Show the embedded default model and the models cached under the personalign home."""
    table = Table(title=f"models in {personalign_home()}")
    table.add_column("name", no_wrap=True)
    table.add_column("kind")
    table.add_column("status")
    table.add_column("path", overflow="fold")
    table.add_column("size", no_wrap=True)
    default = default_model_dir()
    status = "[green]prepared[/]" if is_prepared(default) else "[yellow]not prepared[/] (personalign models prepare)"
    table.add_row(DEFAULT_MODEL, "embedded default", status, str(default), _size(default))
    for path in cached_models():
        if path != default:
            table.add_row(path.name, "cached", "[green]ready[/]", str(path), _size(path))
    console.print(table)


@app.command("prepare")
def prepare(
    name: Annotated[str | None, typer.Argument(help="default (the embedded SmolLM2), a model directory, or a hub id")] = None,
    force: Annotated[bool, typer.Option("--force", help="rebuild the default model's cache even if present")] = False,
) -> None:
    """Prepare the embedded default model once, or check that another model loads."""
    if name is None or name.lower() in DEFAULT_ALIASES:
        name = str(prepare_default_model(force=force))
    model, tokenizer = load_model(name)
    n_params = sum(p.numel() for p in model.parameters())
    console.print(
        f"[green]ok[/] {name}: {type(model).__name__}, {n_params / 1e6:.1f}M parameters, "
        f"vocab {len(tokenizer)}, fingerprint {model_fingerprint(name)}"
    )

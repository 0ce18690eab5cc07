"""`personalign data ...`: validate, stats, build-views, synth."""
from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)

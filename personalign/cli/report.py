"""`personalign report`: one self-contained HTML report (and a Markdown summary) over result directories."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from personalign.cli._common import console
from personalign.errors import require_extra


def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="Result directories, searched recursively.")],
    out: Annotated[Path, typer.Option("--out", help="HTML file to write; the Markdown summary goes beside it.")] = Path("report.html"),
    title: Annotated[str, typer.Option("--title")] = "personalign report",
    max_examples: Annotated[int, typer.Option("--max-examples", min=0, help="Rows of the examples table.")] = 12,
) -> None:
    """Accuracy, win rates, training curves, persona saliency, diversity and examples in one HTML file."""
    require_extra("report", "personalign report")
    from personalign.report.html import build_report

    path = build_report(run_dirs, out, title=title, max_examples=max_examples)
    console.print(f"wrote {path} and {path.with_suffix('.md')}")

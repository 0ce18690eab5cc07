"""`personalign memory ...`: the memory database's schema, for operators (alembic revisions)."""
from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from personalign.cli._common import console, new_app
from personalign.errors import require_extra

app = new_app()

MemoryUrl = Annotated[str, typer.Option("--memory", help="The memory database (SQLAlchemy URL, e.g. sqlite:///users.db).")]


@app.command("current")
def current(memory: MemoryUrl) -> None:
    """The database's schema revision, read without changing anything."""
    require_extra("memory", "personalign memory current")
    from personalign.memory.migrate import REVISIONS
    from personalign.memory.store import schema_revision

    revision = schema_revision(memory)
    state = "no schema yet" if revision is None else "up to date" if revision == REVISIONS[-1] else \
        f"behind: `personalign memory upgrade` brings it to {REVISIONS[-1]}"
    console.print(f"revision {revision or '-'} ({state})", highlight=False)


@app.command("upgrade")
def upgrade(memory: MemoryUrl) -> None:
    """Upgrade the database's schema in place to this personalign's newest revision (in one transaction)."""
    require_extra("memory", "personalign memory upgrade")
    from personalign.memory.migrate import REVISIONS
    from personalign.memory.store import MemoryStore, schema_revision

    before = schema_revision(memory)
    MemoryStore(memory).close()
    console.print(f"revision {before or '-'} -> {REVISIONS[-1]}", highlight=False)


@app.command("history")
def history(memory: Annotated[str | None, typer.Option(
        "--memory", help="Mark the revision this database is at (SQLAlchemy URL).")] = None) -> None:
    """Every schema revision this personalign knows, oldest first."""
    require_extra("memory", "personalign memory history")
    from personalign.memory.migrate import history as revisions
    from personalign.memory.store import schema_revision

    at = schema_revision(memory) if memory is not None else None
    table = Table(title="memory schema revisions")
    for col in ("revision", "", "what it does"):
        table.add_column(col)
    for revision, doc in revisions():
        table.add_row(revision, "current" if revision == at else "", doc.splitlines()[0] if doc else "")
    console.print(table)

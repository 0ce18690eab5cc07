"""Schema migrations of the memory database, through alembic (`personalign/memory/migrations/`).

Each schema version is an alembic revision (`0001`, `0002`, ...) that also records its number in the
`schema_version` table, as the migrations before alembic did. A database made before alembic (a
`schema_version` table, no `alembic_version`) is stamped at its version first, then upgraded in
place; a database at a revision this personalign does not know (made by a newer one) is refused.
"""
from __future__ import annotations

from importlib import resources

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

REVISIONS = ["0001", "0002", "0003"]  # REVISIONS[k - 1] is schema version k; the last is the head
_LEGACY = sa.Table("schema_version", sa.MetaData(), sa.Column("version", sa.Integer, nullable=False),
                   sa.Column("applied_at", sa.Float, nullable=False))


class NewerDatabase(ValueError):
    """A database at a schema this personalign does not know: made by a newer personalign."""


def _config(conn: sa.Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("personalign.memory") / "migrations"))
    cfg.attributes["connection"] = conn
    return cfg


def script() -> ScriptDirectory:
    """The revisions this personalign knows."""
    return ScriptDirectory.from_config(_config())


def current(conn: sa.Connection) -> str | None:
    """The database's revision: alembic's, else its pre-alembic `schema_version` as a revision, else None.
    A schema version beyond the newest this personalign knows is refused either way."""
    version = 0
    if sa.inspect(conn).has_table("schema_version"):
        version = conn.execute(sa.select(sa.func.max(_LEGACY.c.version))).scalar() or 0
    if version > len(REVISIONS):
        raise NewerDatabase(f"the memory database has schema version {version}, newer than this personalign "
                            f"({len(REVISIONS)}): upgrade personalign")
    revision = MigrationContext.configure(conn).get_current_revision()
    return revision if revision is not None else REVISIONS[version - 1] if version else None


def upgrade(conn: sa.Connection, target: str = REVISIONS[-1]) -> str:
    """Bring the database to `target` (default: the head) inside the caller's transaction; its revision."""
    _LEGACY.create(conn, checkfirst=True)
    known = {r.revision for r in script().walk_revisions()}
    at = current(conn)
    if at is not None and at not in known:
        raise NewerDatabase(f"the memory database is at revision {at}, unknown to this personalign (newest "
                            f"{REVISIONS[-1]}): upgrade personalign")
    cfg = _config(conn)
    if at is not None and MigrationContext.configure(conn).get_current_revision() is None:
        command.stamp(cfg, at)  # a database from before alembic: where its schema_version says it is
    command.upgrade(cfg, target)
    return target


def history() -> list[tuple[str, str]]:
    """(revision, what it does) of every known revision, oldest first."""
    return [(r.revision, (r.doc or "").strip()) for r in reversed(list(script().walk_revisions()))]

"""The memory store's databases for tests: SQLite (a file per test) and PostgreSQL (the server every
machine of this project runs on 127.0.0.1:5432, trust auth; a fresh database per test, dropped
afterwards). `memory_url` is the fixture (registered in tests/conftest.py).

Where no PostgreSQL answers (a laptop), its cases skip with the reason; under `CI=true` a missing
server fails them instead. Rows are read back with the database's own driver (sqlite3, psycopg),
never through the code under test.
"""
from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_ADMIN = os.environ.get("PERSONALIGN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_admin():
    import psycopg

    return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)


def _postgres_or_skip() -> None:
    try:
        _pg_admin().close()  # ImportError too, where the driver is not installed
    except Exception as e:  # noqa: BLE001 - any failure to reach the server means "no PostgreSQL here"
        why = f"no PostgreSQL at {PG_ADMIN.rsplit('@', 1)[-1]} ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why}; CI runs the memory tests against PostgreSQL")
        pytest.skip(why)


def memory_url(request, tmp_path) -> Iterator[str]:
    """A database URL for a fresh, empty memory store: SQLite or PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'users.db'}"
        return
    _postgres_or_skip()
    name = f"personalign_test_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
    finally:
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _raw(url: str):
    """A DB-API connection to the store's database with its own driver."""
    if url.startswith("sqlite:///"):
        return sqlite3.connect(Path(url.removeprefix("sqlite:///")))
    import psycopg

    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1), autocommit=True)


def tables(url: str) -> dict[str, list[tuple]]:
    """Every row of every table of the database at `url`."""
    conn = _raw(url)
    try:
        if url.startswith("sqlite:///"):
            names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        else:
            names = [r[0] for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")]
        return {n: [tuple(r) for r in conn.execute(f'SELECT * FROM "{n}"').fetchall()] for n in names}
    finally:
        conn.close()


def execute(url: str, sql: str) -> None:
    """Run one statement on the database at `url` with its own driver, committed."""
    conn = _raw(url)
    try:
        conn.execute(sql)
        conn.commit()
    finally:
        conn.close()

"""Schema migrations through alembic: a database from before alembic upgrades in place and keeps every
row, a database newer than this personalign is refused in one line, and operators see and move the
revision with `personalign memory current|upgrade|history`."""
from __future__ import annotations

import json
import sqlite3

import pytest
from memdb import execute, tables
from typer.testing import CliRunner

from personalign.cli import app
from personalign.memory.migrate import REVISIONS
from personalign.memory.store import MemoryRequestError, MemoryStore, RequestIdConflict

# The schema a `schema_version` 2 database has, as the migrations before alembic wrote it (users, then
# items without `direction`, then ALTER TABLE ADD COLUMN direction), with rows in every table.
VERSION_2 = [
    "CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at FLOAT NOT NULL)",
    "CREATE TABLE users (user_id VARCHAR(200) NOT NULL, demographic TEXT, persona TEXT, profile TEXT, direction TEXT, "
    "created_at FLOAT NOT NULL, updated_at FLOAT NOT NULL, PRIMARY KEY (user_id))",
    "CREATE TABLE items (id INTEGER NOT NULL, user_id VARCHAR(200) NOT NULL, kind VARCHAR(8) NOT NULL, "
    "prompt TEXT NOT NULL, comment TEXT, chosen TEXT, rejected TEXT, request_id VARCHAR(200), created_at FLOAT NOT NULL, "
    "PRIMARY KEY (id), CONSTRAINT uq_items_user_request UNIQUE (user_id, request_id), "
    "FOREIGN KEY(user_id) REFERENCES users (user_id) ON DELETE CASCADE)",
    "CREATE INDEX ix_items_user_id ON items (user_id)",
    "ALTER TABLE items ADD COLUMN direction TEXT",
    "INSERT INTO schema_version VALUES (1, 1.0)",
    "INSERT INTO schema_version VALUES (2, 2.0)",
    "INSERT INTO users VALUES ('ann', 'A 41-year-old teacher.', 'The user likes brevity.', NULL, NULL, 1.0, 1.0)",
    "INSERT INTO users VALUES ('bob', NULL, NULL, NULL, NULL, 1.0, 1.0)",
    "INSERT INTO items VALUES (1, 'ann', 'comment', 'post', 'a comment', NULL, NULL, 'r1', 1.0, NULL)",
    f"INSERT INTO items VALUES (2, 'ann', 'pair', 'q1', NULL, 'short', 'long', NULL, 2.0, '{json.dumps([0.5] * 90)}')",
    "INSERT INTO items VALUES (3, 'bob', 'pair', 'q2', NULL, 'yes', 'no', 'r2', 3.0, NULL)",
]


@pytest.fixture()
def version_2(tmp_path) -> str:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        for statement in VERSION_2:
            conn.execute(statement)
    return f"sqlite:///{path}"


def cli(*args: str, code: int = 0) -> str:
    res = CliRunner().invoke(app, ["memory", *args], env={"COLUMNS": "120"})
    assert res.exit_code == code, res.output
    return res.output


def test_a_schema_version_2_database_upgrades_through_alembic_and_keeps_every_row(version_2):
    before = tables(version_2)
    assert "revision 0002 (behind" in cli("current", "--memory", version_2)
    store = MemoryStore(version_2)
    after = tables(version_2)
    assert after["users"] == before["users"] and after["items"] == before["items"]
    assert after["alembic_version"] == [(REVISIONS[-1],)]
    assert [v for v, _ in after["schema_version"]] == [1, 2, 3]
    assert store.history("ann")["history"][0]["comment"] == "a comment"
    assert store.set_state("ann", "m", [0.1, 0.2], 1) and store.get_state("ann", "m") == ([0.1, 0.2], 1)
    with pytest.raises(RequestIdConflict):  # the old rows' request ids are still unique per user
        store.add_pair("bob", "q3", "a", "b", request_id="r2")
    assert store.add_pair("bob", "q2", "yes", "no", request_id="r2").created is False  # a true retry
    assert store.counts()["items"] == 3
    store.close()
    assert "revision 0003 (up to date)" in cli("current", "--memory", version_2)


def test_the_operator_commands_show_and_move_the_revision(memory_url):
    assert "no schema yet" in cli("current", "--memory", memory_url)
    assert f"- -> {REVISIONS[-1]}" in cli("upgrade", "--memory", memory_url)
    shown = cli("history", "--memory", memory_url)
    assert all(r in shown for r in REVISIONS) and "current" in shown and "user-model states" in shown
    assert f"{REVISIONS[-1]} -> {REVISIONS[-1]}" in cli("upgrade", "--memory", memory_url)  # a second run: no-op


def test_a_database_at_a_revision_this_personalign_does_not_know_is_refused_in_one_line(memory_url):
    MemoryStore(memory_url).close()
    execute(memory_url, "UPDATE alembic_version SET version_num = '0099'")
    with pytest.raises(MemoryRequestError, match="0099, unknown to this personalign"):
        MemoryStore(memory_url)
    out = cli("upgrade", "--memory", memory_url, code=2)
    assert out.startswith("error: ") and "upgrade personalign" in out and len(out.strip().splitlines()) == 1

"""The per-user memory store: writes, reads, deletion, injection attempts, migrations, export; on SQLite
and on PostgreSQL (tests/memory/conftest.py)."""
import json
import sqlite3

import pytest
from memdb import execute, tables
from typer.testing import CliRunner

from personalign.cli import app
from personalign.memory.store import SCHEMA_VERSION, MemoryRequestError, MemoryStore, RequestIdConflict
from personalign.records.io import read_examples

EVIL = ["x'); DROP TABLE items; --", "1 OR 1=1", "u\" ; DELETE FROM users; --", "../../etc/passwd", "ü 🙂 \n\t"]


@pytest.fixture()
def store(memory_url):
    s = MemoryStore(memory_url)
    yield s
    s.close()


def test_history_keeps_arrival_order_and_a_retried_request_is_stored_once(store):
    store.add_comment("ann", "Trip report?", "Lisbon was lovely.")
    first = store.add_pair("ann", "Dinner idea?", "Pasta.", "Nothing.", request_id="r1")
    again = store.add_pair("ann", "Dinner idea?", "Pasta.", "Nothing.", request_id="r1")
    store.add_pair("ann", "Book?", "Dune.", "No idea.")
    store.set_user("ann", demographic="A 30-year-old nurse.", persona="Likes brevity.")
    doc = store.history("ann")
    assert [i["kind"] for i in doc["history"]] == ["comment", "pair", "pair"]
    assert first.created and not again.created and first.item_id == again.item_id
    assert doc["demographic"] == "A 30-year-old nurse." and doc["persona"] == "Likes brevity."
    user = store.user_context("ann")
    assert [p.prompt for p in user.pairs] == ["Dinner idea?", "Book?"] and user.ugc[0].comment == "Lisbon was lovely."
    assert user.persona("chosen") == "Likes brevity." and store.history("bob") is None


def test_a_request_id_reused_for_other_content_is_a_conflict_and_stores_nothing(store):
    store.add_pair("ann", "Dinner idea?", "Pasta.", "Nothing.", request_id="r1")
    with pytest.raises(RequestIdConflict, match="request_id 'r1' was already used for a different pair"):
        store.add_comment("ann", "Dinner idea?", "Something else.", request_id="r1")
    with pytest.raises(RequestIdConflict):
        store.add_pair("ann", "Dinner idea?", "Pizza.", "Nothing.", request_id="r1")
    assert [i["kind"] for i in store.history("ann")["history"]] == ["pair"]


def test_deleting_a_user_leaves_nothing_of_them_in_any_table(store, tmp_path):
    for user in ("ann", "bob"):
        store.add_pair(user, f"{user}'s question", "yes", "no", request_id="r")
        store.add_comment(user, "post", f"{user} says hi")
        store.set_user(user, persona=f"{user} persona", direction=[0.5] * 90)
    assert store.delete_user("ann") == 3
    dump = json.dumps(tables(store.url), default=str)
    assert "ann" not in dump and "bob" in dump
    assert store.history("ann") is None and store.history("bob") is not None


@pytest.mark.parametrize("evil", EVIL)
def test_injection_attempts_are_stored_as_text(evil, store, tmp_path):
    store.add_pair(evil, evil, evil + " chosen", evil + " rejected")
    store.add_comment("other", "p", "c")
    assert store.history(evil)["history"][0]["prompt"] == evil
    rows = tables(store.url)
    assert {"users", "items", "schema_version"} <= set(rows) and len(rows["users"]) == 2
    assert store.delete_user(evil) == 2 and store.history("other") is not None


def test_bad_writes_are_refused_and_write_nothing(store, tmp_path):
    for call in (lambda: store.add_pair("", "p", "a", "b"), lambda: store.add_pair("u" * 201, "p", "a", "b"),
                 lambda: store.add_pair("u", "p", "same", "same"), lambda: store.add_comment("u", "p", "  ")):
        with pytest.raises(MemoryRequestError):
            call()
    assert store.counts() == {"users": 0, "items": 0}


def test_a_sqlite_file_in_a_new_directory_is_created(tmp_path):
    MemoryStore(f"sqlite:///{tmp_path / 'new' / 'dir' / 'users.db'}").add_comment("ann", "p", "c")
    assert (tmp_path / "new" / "dir" / "users.db").is_file()


def test_schema_versions_are_recorded_and_a_newer_database_is_refused(memory_url):
    first = MemoryStore(memory_url)
    first.add_pair("ann", "p", "a", "b")
    first.close()
    reopened = MemoryStore(memory_url)
    assert reopened.version == SCHEMA_VERSION and reopened.counts()["items"] == 1
    reopened.close()
    assert sorted(r[0] for r in tables(memory_url)["schema_version"]) == list(range(1, SCHEMA_VERSION + 1))
    execute(memory_url, "INSERT INTO schema_version VALUES (99, 0)")
    with pytest.raises(MemoryRequestError, match="newer"):
        MemoryStore(memory_url)


def test_export_gives_each_pair_only_the_history_before_it_and_validates_with_no_rejects(store, tmp_path):
    store.add_comment("ann", "post 1", "comment 1")
    store.add_pair("ann", "q1", "c1", "r1")
    store.add_comment("ann", "post 2", "comment 2")
    store.add_pair("ann", "q2", "c2", "r2")
    store.add_pair("bob", "q3", "c3", "r3")
    store.set_user("ann", demographic="A 41-year-old teacher.")
    out = tmp_path / "memory.jsonl"
    res = CliRunner().invoke(app, ["data", "export-memory", "--memory", store.url, "--out", str(out)])
    assert res.exit_code == 0, res.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in records] == ["q1", "q2", "q3"]
    for r in records:  # no record sees its own label, nor anything that came after it
        seen = {p["prompt"] for p in r["Pair-wise Comparative Feedback"]}
        assert r["prompt"] not in seen
    assert [len(r["Pair-wise Comparative Feedback"]) for r in records] == [0, 1, 0]
    assert [[c["comment"] for c in r["User-Generated Content"]] for r in records] == [["comment 1"],
                                                                                     ["comment 1", "comment 2"], []]
    res = CliRunner().invoke(app, ["data", "validate", str(out), "--on-invalid", "skip"])
    assert res.exit_code == 0, res.output
    assert len(list(read_examples(out))) == 3 and not (tmp_path / "memory.rejects.jsonl").exists()


@pytest.mark.parametrize("url, needle", [("not a url", "not a usable database URL"),
                                         ("sqlite:///{tmp}/a-file/users.db", "cannot open the memory database"),
                                         ("postgresql://me:s3cret@localhost/x", "postgresql://me:***@localhost/x")])
def test_a_bad_memory_url_is_one_line_exit_2_without_the_password(url, needle, tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    url = url.format(tmp=tmp_path)
    res = CliRunner().invoke(app, ["data", "export-memory", "--memory", url, "--out", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output
    assert "s3cret" not in res.output


def test_a_version_1_database_is_migrated_in_place(tmp_path, monkeypatch):
    from personalign.memory import store as store_module

    url = f"sqlite:///{tmp_path / 'old.db'}"
    monkeypatch.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:1])
    old = MemoryStore(url)
    with old.engine.begin() as conn:  # a version-1 writer: items have no direction column
        conn.exec_driver_sql("INSERT INTO users VALUES ('ann', NULL, NULL, NULL, NULL, 0, 0)")
        conn.exec_driver_sql("INSERT INTO items (user_id, kind, prompt, comment, created_at) "
                             "VALUES ('ann', 'comment', 'p', 'old comment', 0)")
    old.close()
    assert "direction" not in [r[1] for r in sqlite3.connect(tmp_path / "old.db").execute("PRAGMA table_info(items)")]
    monkeypatch.undo()
    new = MemoryStore(url)
    assert new.version == SCHEMA_VERSION and new.history("ann")["history"][0]["comment"] == "old comment"
    new.add_pair("ann", "q", "a", "b", direction=[0.5] * 89 + [1])
    assert new.user_context("ann").pairs[0].direction[-1] == 1
    assert [r[0] for r in tables(url)["schema_version"]] == list(range(1, SCHEMA_VERSION + 1))


def test_directions_are_checked_stored_and_exported_with_the_history(store, tmp_path):
    with pytest.raises(MemoryRequestError, match="90 values"):
        store.add_pair("ann", "q", "a", "b", direction=[0.3] * 90)
    first, second = [0.5] * 90, [0.5] * 90
    first[3], second[7] = 1, 0
    store.add_pair("ann", "q1", "a1", "b1", direction=first)
    store.add_pair("ann", "q2", "a2", "b2", direction=second)
    out = tmp_path / "m.jsonl"
    assert CliRunner().invoke(app, ["data", "export-memory", "--memory", store.url, "--out", str(out)]).exit_code == 0
    last = json.loads(out.read_text().splitlines()[-1])
    assert last["Preference Direction"] == second  # the pair's own vector, at the top (never used for profiles)
    assert last["Pair-wise Comparative Feedback"][0]["Preference Direction"] == first
    (ex, later) = read_examples(out)
    assert later.user.pairs[0].direction == first


def test_twenty_concurrent_first_writes_of_a_new_user_all_succeed_and_a_raced_retry_is_stored_once(store):
    """Hostile-client finding: 20 first writes for one new user at once used to give some a bare 500
    (UNIQUE constraint on users.user_id); retries of one request racing each other are stored once."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(20) as pool:
        written = list(pool.map(lambda k: store.add_pair("newcomer", f"q{k}", "a", "b", request_id=f"r{k}"), range(20)))
        retried = list(pool.map(lambda _: store.add_pair("newcomer", "same", "a", "b", request_id="dup"), range(10)))
    assert sorted(w.item_id for w in written) == sorted({w.item_id for w in written}) and all(w.created for w in written)
    assert len({w.item_id for w in retried}) == 1 and sum(w.created for w in retried) == 1
    assert store.counts() == {"users": 1, "items": 21}


def test_a_state_fitted_before_a_delete_is_not_stored_for_the_user_created_again(store):
    """A refit reads the user, the user is deleted and created again, the refit stores: refused, since
    the state was fitted on the old user's history; a refit of the new user stores."""
    import time

    store.add_pair("ann", "old", "a", "b")
    born = store.user_created("ann")
    store.delete_user("ann")
    time.sleep(0.01)
    store.add_pair("ann", "new", "c", "d")
    assert store.user_created("ann") != born
    assert store.set_state("ann", "m", [1.0], 1, while_created=born) is False
    assert store.get_state("ann", "m") is None
    assert store.set_state("ann", "m", [2.0], 1, while_created=store.user_created("ann"))
    assert store.get_state("ann", "m") == ([2.0], 1)

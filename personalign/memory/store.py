"""Per-user memory in AlignX terms, on a real database through SQLAlchemy (Core, parameterised SQL only).

Tables (schema version `SCHEMA_VERSION`; alembic revisions applied at open, in one transaction, and
recorded in `alembic_version` and in `schema_version`: `personalign.memory.migrate`):

* `users`: one row per user id: demographic text, persona, direction vector (JSON), profile.
* `user_states`: a user model's state of the user (docs/user-models.md): which model, the state
  vector (JSON), how many pairs it was fitted on; deleted with the user.
* `items`: the user's history in arrival order (`id` grows): a comment (`prompt`, `comment`) or a
  preference pair (`prompt`, `chosen`, `rejected`), with an optional client `request_id` that is
  unique per user (a retried write is stored once).

SQLite is the default (a file, nothing to start; WAL journal, synchronous=FULL, so an acknowledged
write survives a killed process); any SQLAlchemy URL works (e.g. `postgresql+psycopg://...`).
A write returns only after its transaction commits.
"""
from __future__ import annotations

import importlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from personalign.errors import UserError
from personalign.memory.migrate import REVISIONS, NewerDatabase, current, upgrade
from personalign.records.schema import (
    DEMOGRAPHIC,
    DIRECTION,
    N_DIMENSIONS,
    PAIRS,
    PROFILE,
    UGC,
    Comment,
    Pair,
    UserContext,
)

SCHEMA_VERSION = len(REVISIONS)
MAX_USER_ID = 200  # characters
# A database server's connection pool, per process: the requests' worker threads share at most
# pool_size + max_overflow connections (N replicas need max_connections >= 20 N); a connection the
# server dropped (a restart, a failover) is noticed before use and replaced.
POOL = {"pool_size": 10, "max_overflow": 10, "pool_timeout": 30, "pool_pre_ping": True}

metadata = sa.MetaData()
schema_version = sa.Table("schema_version", metadata, sa.Column("version", sa.Integer, nullable=False),
                          sa.Column("applied_at", sa.Float, nullable=False))
users = sa.Table(
    "users", metadata,
    sa.Column("user_id", sa.String(MAX_USER_ID), primary_key=True),
    sa.Column("demographic", sa.Text), sa.Column("persona", sa.Text), sa.Column("profile", sa.Text),
    sa.Column("direction", sa.Text),  # JSON list of the 90 AlignX dimension values
    sa.Column("created_at", sa.Float, nullable=False), sa.Column("updated_at", sa.Float, nullable=False),
)
items = sa.Table(  # a user's history: comments and preference pairs, in arrival order
    "items", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.String(MAX_USER_ID), sa.ForeignKey("users.user_id", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("kind", sa.String(8), nullable=False),  # "comment" | "pair"
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("comment", sa.Text), sa.Column("chosen", sa.Text), sa.Column("rejected", sa.Text),
    sa.Column("request_id", sa.String(200)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("direction", sa.Text),  # the item's AlignX direction vector (JSON), for pba profiles
    sa.UniqueConstraint("user_id", "request_id", name="uq_items_user_request"),
)
user_states = sa.Table(
    "user_states", metadata,
    sa.Column("user_id", sa.String(MAX_USER_ID), sa.ForeignKey("users.user_id", ondelete="CASCADE"), primary_key=True),
    sa.Column("model", sa.String(64), primary_key=True),  # the user model's key (its directory's digest)
    sa.Column("state", sa.Text, nullable=False),  # JSON list of floats
    sa.Column("pairs", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)


MIGRATIONS = list(REVISIONS)  # alembic revisions: MIGRATIONS[k - 1] takes the schema to version k


class MemoryRequestError(ValueError):
    """A request the memory store refuses (bad user id, empty text)."""


class RequestIdConflict(MemoryRequestError):
    """A `request_id` already used by this user for a different item (HTTP 409)."""


@dataclass(frozen=True, slots=True)
class Written:
    """An acknowledged write: the item's id, and whether it was new (False: a retried request_id)."""

    item_id: int
    created: bool


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def open_engine(url: str) -> sa.Engine:
    """An engine on the memory database at `url` (SQLite: WAL, synchronous=FULL, foreign keys; its
    directory created); a URL that cannot be used is a one-line error that never shows a password."""
    try:
        server = not url.startswith("sqlite")
        engine = sa.create_engine(url, **(POOL if server else {}))
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as e:
        raise UserError(f"not a usable database URL {_safe(url)!r} ({e}); e.g. sqlite:///users.db",
                        option="--memory") from None
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        database = engine.url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            try:
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise UserError(f"cannot open the memory database {_safe(url)!r}: {e.strerror or e}",
                                option="--memory") from None
    return engine


def schema_revision(url: str) -> str | None:
    """The memory database's schema revision, read without upgrading it (None: no schema yet)."""
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            return current(conn)
    except NewerDatabase as e:
        raise MemoryRequestError(str(e)) from None
    except sa.exc.DBAPIError as e:
        raise UserError(f"cannot open the memory database {_safe(url)!r}: {e.orig}", option="--memory") from None
    finally:
        engine.dispose()


class MemoryStore:
    """The memory database at `url` (e.g. `sqlite:///users.db`), migrated to `SCHEMA_VERSION` on open."""

    def __init__(self, url: str):
        self.url = url
        self.engine = open_engine(url)
        try:
            self.version = self._migrate()
        except sa.exc.DBAPIError as e:
            raise UserError(f"cannot open the memory database {_safe(url)!r}: {e.orig}", option="--memory") from None

    def _migrate(self) -> int:
        """Upgrade the schema in place (alembic, `personalign.memory.migrate`) in one transaction; its version."""
        try:
            with self.engine.begin() as conn:
                upgrade(conn, MIGRATIONS[-1])
        except NewerDatabase as e:
            raise MemoryRequestError(str(e)) from None
        return len(MIGRATIONS)

    def close(self) -> None:
        self.engine.dispose()

    # -- writes ----------------------------------------------------------------------------------

    def _ensure_user(self, conn: sa.Connection, user_id: str) -> None:
        """Create the user's row unless it exists; concurrent first writes of one new user race here, so
        the insert is the database's own "insert or do nothing" (SQLite, PostgreSQL), never a 500."""
        check_user_id(user_id)
        now = time.time()
        row = {"user_id": user_id, "created_at": now, "updated_at": now}
        if conn.dialect.name in ("sqlite", "postgresql"):
            insert = importlib.import_module(f"sqlalchemy.dialects.{conn.dialect.name}").insert
            conn.execute(insert(users).values(**row).on_conflict_do_nothing(index_elements=[users.c.user_id]))
        elif conn.execute(sa.select(users.c.user_id).where(users.c.user_id == user_id)).first() is None:
            conn.execute(users.insert().values(**row))

    def set_user(self, user_id: str, *, demographic: str | None = None, persona: str | None = None,
                 profile: str | None = None, direction: list[float] | None = None) -> None:
        """Create the user if needed and set the given fields (None leaves a field as it is)."""
        values: dict[str, Any] = {k: v for k, v in (("demographic", demographic), ("persona", persona),
                                                    ("profile", profile)) if v is not None}
        if direction is not None:
            values["direction"] = _direction(direction)
        with self.engine.begin() as conn:
            self._ensure_user(conn, user_id)
            conn.execute(users.update().where(users.c.user_id == user_id).values(updated_at=time.time(), **values))

    def update_user(self, user_id: str, *, persona: str | None = None, profile: str | None = None,
                    while_item: tuple[int, float] | None = None) -> bool:
        """Set fields of an existing user only (False when the user does not exist, e.g. was deleted).
        `while_item` (an item's id and time, `latest_pair`) writes only while that item still exists: a
        user deleted and created again meanwhile does not get what was derived from the old history."""
        values = {k: v for k, v in (("persona", persona), ("profile", profile)) if v is not None}
        where = users.c.user_id == check_user_id(user_id)
        if while_item is not None:
            where = where & sa.exists().where(items.c.id == while_item[0], items.c.user_id == user_id,
                                              items.c.created_at == while_item[1])
        with self.engine.begin() as conn:
            done = conn.execute(users.update().where(where).values(updated_at=time.time(), **values)).rowcount
        return done > 0

    def latest_pair(self, user_id: str) -> tuple[tuple[int, float], Pair] | None:
        """The user's newest preference pair with its key (item id, time), or None."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(items).where(items.c.user_id == check_user_id(user_id), items.c.kind == "pair")
                               .order_by(items.c.id.desc()).limit(1)).first()
        if row is None:
            return None
        return (row.id, row.created_at), Pair(row.prompt, row.chosen, row.rejected)

    def add_pair(self, user_id: str, prompt: str, chosen: str, rejected: str, *, request_id: str | None = None,
                 direction: list[float] | None = None) -> Written:
        """Append a preference (chosen over rejected for `prompt`) to the user's history; `direction`
        (the 90 AlignX values, each 0, 0.5 or 1) feeds the pba profile of later requests."""
        for name, text in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
            _check_text(name, text)
        if chosen == rejected:
            raise MemoryRequestError("chosen and rejected are the same text")
        return self._add(user_id, request_id, kind="pair", prompt=prompt, chosen=chosen, rejected=rejected,
                         direction=_direction(direction))

    def add_comment(self, user_id: str, prompt: str, comment: str, *, request_id: str | None = None,
                    direction: list[float] | None = None) -> Written:
        """Append a comment (the user's own text on `prompt`) to the user's history."""
        _check_text("prompt", prompt)
        _check_text("comment", comment)
        return self._add(user_id, request_id, kind="comment", prompt=prompt, comment=comment,
                         direction=_direction(direction))

    def _add(self, user_id: str, request_id: str | None, **values: Any) -> Written:
        with self.engine.begin() as conn:
            self._ensure_user(conn, user_id)
            if request_id is not None and (found := _same_request(conn, user_id, request_id, values)) is not None:
                return found
            try:
                with conn.begin_nested():  # a savepoint: a concurrent retry of this request may win the insert
                    result = conn.execute(items.insert().values(user_id=user_id, request_id=request_id,
                                                                created_at=time.time(), **values))
            except sa.exc.IntegrityError:
                found = None if request_id is None else _same_request(conn, user_id, request_id, values)
                if found is None:
                    raise
                return found
            conn.execute(users.update().where(users.c.user_id == user_id).values(updated_at=time.time()))
            return Written(result.inserted_primary_key[0], True)

    def delete_user(self, user_id: str) -> int:
        """Erase every trace of the user (history and user row); the number of rows deleted."""
        check_user_id(user_id)
        with self.engine.begin() as conn:
            n = conn.execute(items.delete().where(items.c.user_id == user_id)).rowcount
            n += conn.execute(user_states.delete().where(user_states.c.user_id == user_id)).rowcount
            n += conn.execute(users.delete().where(users.c.user_id == user_id)).rowcount
        return n

    def set_state(self, user_id: str, model: str, state: list[float], pairs: int, *,
                  while_created: float | None = None) -> bool:
        """Store the user's state under user model `model` (False when the user no longer exists, or, with
        `while_created` (`user_created`), when the user was deleted and created again since)."""
        blob = json.dumps([float(x) for x in state])
        with self.engine.begin() as conn:
            born = conn.execute(sa.select(users.c.created_at).where(users.c.user_id == check_user_id(user_id))).first()
            if born is None or (while_created is not None and born[0] != while_created):
                return False
            where = (user_states.c.user_id == user_id) & (user_states.c.model == model)
            values = {"state": blob, "pairs": pairs, "updated_at": time.time()}
            if conn.execute(user_states.update().where(where).values(**values)).rowcount == 0:
                conn.execute(user_states.insert().values(user_id=user_id, model=model, **values))
        return True

    def user_created(self, user_id: str) -> float | None:
        """When the user's row was created (a user deleted and created again gets a new time), or None."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(users.c.created_at).where(users.c.user_id == check_user_id(user_id))).first()
        return None if row is None else row[0]

    def get_state(self, user_id: str, model: str) -> tuple[list[float], int] | None:
        """(state, pairs fitted on) of the user under `model`, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(user_states.c.state, user_states.c.pairs).where(
                (user_states.c.user_id == check_user_id(user_id)) & (user_states.c.model == model))).first()
        return None if row is None else (json.loads(row[0]), int(row[1]))

    # -- reads -----------------------------------------------------------------------------------

    def has_user(self, user_id: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(users.c.user_id).where(users.c.user_id == user_id)).first() is not None

    def history(self, user_id: str) -> dict[str, Any] | None:
        """The user's fields and history in arrival order (None for an unknown user)."""
        check_user_id(user_id)
        with self.engine.connect() as conn:
            user = conn.execute(sa.select(users).where(users.c.user_id == user_id)).mappings().first()
            if user is None:
                return None
            rows = conn.execute(sa.select(items).where(items.c.user_id == user_id).order_by(items.c.id)).mappings()
            history = [_item(r) for r in rows]
        return {"user_id": user_id, "demographic": user["demographic"], "persona": user["persona"],
                "profile": user["profile"], "direction": json.loads(user["direction"]) if user["direction"] else None,
                "history": history}

    def user_context(self, user_id: str) -> UserContext | None:
        """The user's memory as the `UserContext` every view renders (None for an unknown user)."""
        doc = self.history(user_id)
        if doc is None:
            return None
        return _context(doc, doc["history"])

    def user_ids(self) -> Iterator[str]:
        with self.engine.connect() as conn:
            for (user_id,) in conn.execute(sa.select(users.c.user_id).order_by(users.c.user_id)):
                yield user_id

    def export_records(self) -> Iterator[dict[str, Any]]:
        """One AlignX record per stored pair: the pair is the record's prompt/chosen/rejected, and its
        history is what the user had *before* it (earlier comments and pairs only), so no record sees
        its own label; the user's demographic text, persona and direction come along."""
        for user_id in self.user_ids():
            doc = self.history(user_id)
            for k, item in enumerate(doc["history"]):
                if item["kind"] != "pair":
                    continue
                earlier = doc["history"][:k]
                record = {"prompt": item["prompt"], "chosen": item["chosen"], "rejected": item["rejected"],
                          UGC: [_with_direction({"prompt": i["prompt"], "comment": i["comment"]}, i)
                                for i in earlier if i["kind"] == "comment"],
                          PAIRS: [_with_direction({"prompt": i["prompt"], "chosen": i["chosen"],
                                                   "rejected": i["rejected"]}, i)
                                  for i in earlier if i["kind"] == "pair"],
                          "user_id": user_id, "memory_item": item["id"]}
                if doc["demographic"]:
                    record[DEMOGRAPHIC] = doc["demographic"]
                if doc["persona"]:
                    record["chosen_persona"] = doc["persona"]
                if item["direction"] or doc["direction"]:  # the pair's own vector (never used for profiles)
                    record[DIRECTION] = item["direction"] or doc["direction"]
                if doc["profile"]:
                    record[PROFILE] = doc["profile"]
                yield record

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {"users": conn.execute(sa.select(sa.func.count()).select_from(users)).scalar(),
                    "items": conn.execute(sa.select(sa.func.count()).select_from(items)).scalar()}


def _safe(url: str) -> str:
    """The URL with any password hidden (for messages), also in malformed URLs: a `user:secret@`
    part and a `password=` query value are masked whatever else is wrong with the URL."""
    try:
        shown = sa.engine.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        shown = url
    shown = re.sub(r"([^/@:?#\s]+):([^@/\s]+)@", r"\1:***@", shown)
    return re.sub(r"(?i)((?:^|[?&;])password=)[^&;#]*", r"\1***", shown)


_SAME = ("kind", "prompt", "chosen", "rejected", "comment")  # what a retry must repeat to count as the same request


def _same_request(conn: sa.Connection, user_id: str, request_id: str, values: dict[str, Any]) -> Written | None:
    """The stored item of (user, request_id) as a repeat of this request; None when there is none;
    `RequestIdConflict` when the id was used for a different item."""
    row = conn.execute(sa.select(items.c.id, *(items.c[k] for k in _SAME))
                       .where(items.c.user_id == user_id, items.c.request_id == request_id)).first()
    if row is None:
        return None
    if any(getattr(row, k) != values.get(k) for k in _SAME):
        raise RequestIdConflict(f"request_id {request_id!r} was already used for a different {row.kind}")
    return Written(row.id, False)


def _direction(values: list[float] | None) -> str | None:
    """A direction vector as stored (JSON), checked as AlignX defines it: N values, each 0, 0.5 or 1."""
    if values is None:
        return None
    if not isinstance(values, list) or len(values) != N_DIMENSIONS or any(
            type(v) not in (int, float) or v not in (0, 0.5, 1) for v in values):
        raise MemoryRequestError(f"a direction is a list of {N_DIMENSIONS} values, each 0, 0.5 or 1")
    return json.dumps(values)


def _item(row: Any) -> dict[str, Any]:
    base = {"id": row["id"], "kind": row["kind"], "prompt": row["prompt"], "created_at": row["created_at"],
            "direction": json.loads(row["direction"]) if row["direction"] else None}
    if row["kind"] == "comment":
        return base | {"comment": row["comment"]}
    return base | {"chosen": row["chosen"], "rejected": row["rejected"]}


def _with_direction(entry: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    return entry | {DIRECTION: item["direction"]} if item["direction"] else entry


def _context(doc: dict[str, Any], history: list[dict[str, Any]]) -> UserContext:
    user = UserContext()
    user.ugc = [Comment(i["prompt"], i["comment"], i["direction"]) for i in history if i["kind"] == "comment"]
    user.pairs = [Pair(i["prompt"], i["chosen"], i["rejected"], i["direction"]) for i in history if i["kind"] == "pair"]
    user.demographic = doc["demographic"]
    user.profile = doc["profile"]
    user.direction = doc["direction"]
    if doc["persona"]:
        user.personas["chosen_persona"] = doc["persona"]
    return user


def check_user_id(user_id: Any) -> str:
    """A user id is a non-empty string of at most `MAX_USER_ID` characters (any characters: the SQL is parameterised)."""
    if not isinstance(user_id, str) or not user_id or len(user_id) > MAX_USER_ID:
        raise MemoryRequestError(f"a user id is a non-empty string of at most {MAX_USER_ID} characters")
    return user_id


def _check_text(name: str, text: Any) -> None:
    if not isinstance(text, str) or not text.strip():
        raise MemoryRequestError(f"'{name}' must be a non-empty string")

"""Serving from per-user memory: who a request is for, what it may touch, and the prompt it gets.

A chat request names its user with OpenAI's `user` field or an `X-User-Id` header. With a memory
store, the server renders the view it serves from that user's memory, exactly as training renders
a record (`personalign.views.build.build_view`, history fitted to the length budget, newest items
kept): ica from the stored history, pba from the stored profile or the direction vectors of the
history, persona from the stored persona, demo from the demographic text. A user without memory
(or without what the view needs) is answered unconditioned, and the `X-Personalign-Memory` response
header says which happened.

Keys: the server key (`--api-key`, `$PERSONALIGN_API_KEY`) may touch every user; scoped keys
(`$PERSONALIGN_USER_KEYS`, a JSON object {key: user id}) only their own user: 403 otherwise.
Keys are compared in constant time and never logged.
"""
from __future__ import annotations

import hmac
import json
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from personalign.errors import UserError
from personalign.records.formats import messages_prompt
from personalign.records.schema import Example, Pair, UserContext
from personalign.views.build import ViewConfig, build_view

log = logging.getLogger("personalign.serve")
USER_HEADER = "x-user-id"
MEMORY_HEADER = "X-Personalign-Memory"
USER_KEYS_ENV = "PERSONALIGN_USER_KEYS"


class KeyRing:
    """The server key (every user) and the scoped keys (one user each)."""

    def __init__(self, api_key: str | None = None, user_keys: dict[str, str] | None = None):
        self.keys: list[tuple[bytes, str | None]] = []
        if api_key:
            self.keys.append((api_key.encode(), None))
        for key, user in (user_keys or {}).items():
            self.keys.append((key.encode(), user))

    @property
    def required(self) -> bool:
        return bool(self.keys)

    def scope(self, authorization: str) -> tuple[bool, str | None]:
        """(authorized, the one user the key may touch, or None for every user). The scheme is
        case-insensitive (RFC 9110: "Bearer", "bearer"); the token is compared in constant time."""
        scheme, _, token = authorization.strip().partition(" ")
        given = token.strip().encode() if scheme.lower() == "bearer" else b""
        found: tuple[bool, str | None] = (False, None)
        for expected, user in self.keys:  # every key compared, in constant time each
            if hmac.compare_digest(given, expected) and not found[0]:
                found = (True, user)
        return found


def user_keys_from_env() -> dict[str, str]:
    """Scoped keys from `$PERSONALIGN_USER_KEYS` ({key: user id}); a malformed value is a `UserError`."""
    raw = os.environ.get(USER_KEYS_ENV)
    if not raw:
        return {}
    try:
        keys = json.loads(raw)
    except ValueError:
        keys = None
    if not isinstance(keys, dict) or not all(isinstance(k, str) and k and isinstance(v, str) and v
                                             for k, v in keys.items()):
        raise UserError(f"${USER_KEYS_ENV} must be a JSON object {{\"key\": \"user id\", ...}}")
    return keys


def allowed_user(scope: str | None, requested: str | None) -> str | None:
    """The user a request acts for: the requested one, or the key's own; PermissionError when a scoped
    key asks for another user."""
    if scope is not None and requested is not None and requested != scope:
        raise PermissionError("this key may only read and write its own user's memory")
    return requested if requested is not None else scope


def memory_prompt(user: UserContext | None, messages: list[dict[str, str]], view: ViewConfig, tokenizer: Any
                  ) -> tuple[str, str]:
    """(prompt, memory status) for a chat under `view` from `user`'s memory, rendered as training renders a
    record; the `none` layout of the same template when there is no memory or nothing the view needs.
    Status: "used" (all of it), "truncated" (history items dropped to fit `max_prompt_tokens`), "none"
    (nothing of the user's memory in the prompt, also when a long message left no room for any of it)."""
    turns = [m for m in messages if m["role"] != "system"]
    if not turns or turns[-1]["role"] != "user":
        raise ValueError("the last message must come from the user")
    task = messages_prompt(turns)
    if user is not None and view.view != "none" and _has_memory(user, view.view):
        rendered = build_view(Example(task, [" "], None, user, {}, "request"), view, tokenizer)
        crowded_out = view.view == "ica" and rendered.history_used == 0 and not user.demographic
        if rendered.missing is None and not crowded_out:
            return rendered.prompt, "truncated" if rendered.history_dropped else "used"
    none = view.model_copy(update={"view": "none"})
    return build_view(Example(task, [" "], None, UserContext(), {}, "request"), none, tokenizer).prompt, "none"


def _has_memory(user: UserContext, view: str) -> bool:
    """Whether `user` holds what `view` renders (pba and demo say so themselves through `missing`)."""
    if view == "ica":
        return bool(user.ugc or user.pairs or user.demographic)
    if view == "persona":
        return bool(user.persona("chosen"))
    return True


class PersonaRefresher:
    """Optional persona refresh: after every `every` new pairs of a user, infer a new persona from the
    user's latest pair with `infer` (any configured backend; see `personalign serve --persona-refresh`)
    in a background thread, and store it. A user deleted meanwhile stays deleted (the persona is only
    written to a user that still exists); a failed inference is logged without user text."""

    def __init__(self, store: Any, infer: Callable[[Pair], str | None], every: int):
        if every < 1:
            raise ValueError("persona refresh needs every >= 1 new pairs")
        self.store, self.infer, self.every = store, infer, every
        self.pending: dict[str, int] = {}
        self.lock = threading.Lock()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="persona-refresh")
        self.refreshed = 0

    def pair_added(self, user_id: str) -> Future | None:
        """Count a new pair; start a refresh (returned) when the user has `every` since the last one."""
        with self.lock:
            n = self.pending.get(user_id, 0) + 1
            self.pending[user_id] = 0 if n >= self.every else n
        return self.executor.submit(self.refresh, user_id) if n >= self.every else None

    def forget(self, user_id: str) -> None:
        with self.lock:
            self.pending.pop(user_id, None)

    def refresh(self, user_id: str) -> str | None:
        """Infer a persona from the user's latest pair and store it, unless that pair is gone by then (the
        user was deleted, and maybe created again: the old history's persona never reaches the new user)."""
        latest = self.store.latest_pair(user_id)
        if latest is None:
            return None
        key, pair = latest
        try:
            persona = self.infer(pair)
        except Exception as e:  # noqa: BLE001 - a backend failure must not take the server down
            log.warning(f"persona refresh failed ({type(e).__name__}); the stored persona is kept")
            return None
        if persona and self.store.update_user(user_id, persona=persona, while_item=key):
            self.refreshed += 1
            return persona
        return None

    def close(self) -> None:
        self.executor.shutdown(wait=True)

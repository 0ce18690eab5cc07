"""Raw record dict -> `Example` (and back), with errors that name file, line and field.

This sits on the hot path of every reader, so it checks with plain type tests and set
operations, never copies a list it can keep, and only walks element by element to locate an
error once a fast check has failed. `null` for any key means the key is absent.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from personalign.records.errors import RecordError
from personalign.records.formats import needs_normalizing, normalize_record
from personalign.records.schema import (
    CHOSEN,
    COMPLETION,
    DEMOGRAPHIC,
    DIRECTION,
    GOLD_PERSONA,
    LABEL,
    N_DIMENSIONS,
    PAIRS,
    PERSONA_KEYS,
    PROFILE,
    PROMPT,
    REJECTED,
    RESPONSES,
    REWARDS,
    UGC,
    Comment,
    Example,
    Pair,
    UserContext,
)

_NUMBER_TYPES = frozenset({int, float})
_DIRECTION_VALUES = frozenset({0, 0.5, 1})
_ALIAS_OF = {alias: canon for canon, aliases in PERSONA_KEYS.items() for alias in aliases}
_PAIR_CORE = frozenset({PROMPT, CHOSEN, REJECTED})
_RANKING_CORE = frozenset({PROMPT, RESPONSES, REWARDS})
_UNPAIRED_CORE = frozenset({PROMPT, COMPLETION, LABEL})


def _kind(value: Any) -> str:
    """How a JSON value is named in messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "an empty string" if not value else ("a blank string" if value.isspace() else "a string")
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _show(value: Any) -> str:
    """A short JSON rendering of a scalar for messages (0.7, true, "x")."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _Ctx:
    """Where the record came from; builds errors."""

    __slots__ = ("file", "line", "direction_ok")

    def __init__(self, file: str, line: int | None, no_booleans: bool = False):
        self.file, self.line = file, line
        self.direction_ok = _direction_values_ok if no_booleans else _direction_ok

    def error(self, field: str | None, message: str) -> RecordError:
        return RecordError(self.file, self.line, field, message)


def _text(ctx: _Ctx, value: Any, field: str) -> str:
    """A required non-empty, non-blank string."""
    if type(value) is str and value and not value.isspace():
        return value
    if value is None:
        raise ctx.error(field, "required key is missing (or null)")
    raise ctx.error(field, f"expected a non-empty string, got {_kind(value)}")


def _string(ctx: _Ctx, value: Any, field: str) -> str:
    """Any string (may be empty)."""
    if type(value) is str:
        return value
    if value is None:
        raise ctx.error(field, "required key is missing (or null)")
    raise ctx.error(field, f"expected a string, got {_kind(value)}")


def _direction_ok(value: Any) -> bool:
    """Fast check: a list of 90 ints/floats, each 0, 0.5 or 1 (bools have their own type)."""
    return (
        type(value) is list
        and len(value) == N_DIMENSIONS
        and _NUMBER_TYPES.issuperset(map(type, value))
        and _DIRECTION_VALUES.issuperset(value)
    )


def _direction_values_ok(value: Any) -> bool:
    """`_direction_ok` for records known to hold no booleans (True == 1 would pass the value test)."""
    return type(value) is list and len(value) == N_DIMENSIONS and _DIRECTION_VALUES.issuperset(value)


def _direction(ctx: _Ctx, value: Any, field: str) -> list[float]:
    """A list of exactly 90 numbers, each 0, 0.5 or 1 (booleans are not numbers)."""
    if ctx.direction_ok(value):
        return value
    if not isinstance(value, (list, tuple)):
        raise ctx.error(field, f"expected a list of {N_DIMENSIONS} numbers, got {_kind(value)}")
    if len(value) != N_DIMENSIONS:
        raise ctx.error(field, f"expected a list of {N_DIMENSIONS} numbers, got {len(value)}")
    for i, v in enumerate(value):
        if type(v) not in _NUMBER_TYPES or v not in _DIRECTION_VALUES:
            raise ctx.error(f"{field}[{i}]", f"expected one of 0, 0.5, 1, got {_show(v)}")
    return list(value)


def _history(ctx: _Ctx, value: Any, key: str, names: tuple[str, ...], cls: type) -> list:
    """History items with full diagnostics: the path taken once the fast path has failed."""
    shape = "{" + ", ".join(names) + "}"
    if not isinstance(value, (list, tuple)):
        raise ctx.error(key, f"expected a list of objects {shape}, got {_kind(value)}")
    out = []
    for i, item in enumerate(value):
        f = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise ctx.error(f, f"expected an object {shape}, got {_kind(item)}")
        d = item.get(DIRECTION)
        texts = [_string(ctx, item.get(n), f"{f}.{n}") for n in names]
        out.append(cls(*texts, None if d is None else _direction(ctx, d, f"{f}.{DIRECTION}")))
    return out


def _ugc(ctx: _Ctx, value: Any, user: UserContext) -> None:
    out = []
    if type(value) is list:
        for item in value:
            if type(item) is dict:
                p, c, d = item.get("prompt"), item.get("comment"), item.get(DIRECTION)
                if type(p) is str and type(c) is str and (d is None or ctx.direction_ok(d)):
                    out.append(Comment(p, c, d))
                    continue
            break
        else:
            user.ugc = out
            return
    user.ugc = _history(ctx, value, UGC, ("prompt", "comment"), Comment)


def _pairs(ctx: _Ctx, value: Any, user: UserContext) -> None:
    out = []
    if type(value) is list:
        for item in value:
            if type(item) is dict:
                p, c, r, d = item.get("prompt"), item.get("chosen"), item.get("rejected"), item.get(DIRECTION)
                if type(p) is str and type(c) is str and type(r) is str and (d is None or ctx.direction_ok(d)):
                    out.append(Pair(p, c, r, d))
                    continue
            break
        else:
            user.pairs = out
            return
    user.pairs = _history(ctx, value, PAIRS, ("prompt", "chosen", "rejected"), Pair)


def _set_direction(ctx: _Ctx, value: Any, user: UserContext) -> None:
    user.direction = _direction(ctx, value, DIRECTION)


def _set_demographic(ctx: _Ctx, value: Any, user: UserContext) -> None:
    user.demographic = _string(ctx, value, DEMOGRAPHIC)


def _set_profile(ctx: _Ctx, value: Any, user: UserContext) -> None:
    user.profile = _string(ctx, value, PROFILE)


def _persona_setter(key: str, canonical: str):
    def setter(ctx: _Ctx, value: Any, user: UserContext) -> None:
        text = _string(ctx, value, key)
        old = user.personas.get(canonical)
        if old is not None and old != text:
            other = canonical if key != canonical else PERSONA_KEYS[canonical][0]
            raise ctx.error(key, f"conflicts with '{other}': both name the same persona but hold different text")
        user.personas[canonical] = text

    return setter


_USER_KEYS = {
    DIRECTION: _set_direction,
    DEMOGRAPHIC: _set_demographic,
    UGC: _ugc,
    PAIRS: _pairs,
    PROFILE: _set_profile,
    GOLD_PERSONA: _persona_setter(GOLD_PERSONA, GOLD_PERSONA),
    **{k: _persona_setter(k, k) for k in PERSONA_KEYS},
    **{a: _persona_setter(a, c) for a, c in _ALIAS_OF.items()},
}


def _user_and_extra(ctx: _Ctx, raw: dict, core: frozenset[str]) -> tuple[UserContext, dict[str, Any]]:
    user = UserContext()
    extra: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None or key in core:
            continue
        setter = _USER_KEYS.get(key)
        if setter is not None:
            setter(ctx, value, user)
        elif key in _PAIR_CORE or key in _RANKING_CORE or key in _UNPAIRED_CORE:
            kind = "ranking" if RESPONSES in core else "unpaired" if COMPLETION in core else "pair"
            raise ctx.error(key, f"a {kind} record cannot also have '{key}' (use one of 'chosen'/'rejected', "
                            f"'responses'/'rewards' or 'completion'/'label')")
        else:
            extra[key] = value
    return user, extra


def _ranking(ctx: _Ctx, raw: dict, prompt: str, source: str) -> Example:
    responses = raw[RESPONSES]
    if not isinstance(responses, (list, tuple)) or len(responses) < 2:
        got = f"{len(responses)}" if isinstance(responses, (list, tuple)) else _kind(responses)
        raise ctx.error(RESPONSES, f"expected a list of at least 2 non-empty strings, got {got}")
    for i, r in enumerate(responses):
        if type(r) is not str or not r or r.isspace():
            raise ctx.error(f"{RESPONSES}[{i}]", f"expected a non-empty string, got {_kind(r)}")
    responses = list(responses) if type(responses) is not list else responses
    rewards = raw.get(REWARDS)
    if rewards is not None:
        n = len(responses)
        if not isinstance(rewards, (list, tuple)) or len(rewards) != n:
            got = f"{len(rewards)}" if isinstance(rewards, (list, tuple)) else _kind(rewards)
            raise ctx.error(REWARDS, f"expected a list of {n} numbers (one per response), got {got}")
        for i, r in enumerate(rewards):
            if type(r) not in _NUMBER_TYPES or (type(r) is float and not math.isfinite(r)):
                raise ctx.error(f"{REWARDS}[{i}]", f"expected a finite number, got {_show(r)}")
        if any(rewards[i] < rewards[i + 1] for i in range(n - 1)):
            order = sorted(range(n), key=rewards.__getitem__, reverse=True)
            responses = [responses[i] for i in order]
            rewards = [rewards[i] for i in order]
        elif type(rewards) is not list:
            rewards = list(rewards)
    user, extra = _user_and_extra(ctx, raw, _RANKING_CORE)
    return Example(prompt, responses, rewards, user, extra, source)


def _unpaired(ctx: _Ctx, raw: dict, prompt: str, source: str) -> Example:
    """TRL's unpaired preference record: one completion and its label (desirable or not), no rewards."""
    completion = _text(ctx, raw.get(COMPLETION), COMPLETION)
    label = raw.get(LABEL)
    if type(label) is not bool:
        raise ctx.error(LABEL, f"expected true or false (is the completion desirable?), got {_show(label)}")
    user, extra = _user_and_extra(ctx, raw, _UNPAIRED_CORE)
    return Example(prompt, [completion], None, user, extra, source, label=label)


def to_example(raw: dict, *, file: str, line: int | None, no_booleans: bool = False,
               columns: Mapping[str, str] | None = None) -> Example:
    """Validate one raw record (pair/AlignX/persona, or ranking if it has `responses`) into an Example;
    other formats (TRL's, HH-RLHF, ScalingAlignment's) and `columns` renames are read through
    `personalign.records.formats` first.

    Raises `RecordError(file, line, field, message)` with a precise field path on the first problem.
    `no_booleans=True` is a reader's promise that the record's JSON text has no `true`/`false`
    literal, which lets direction vectors skip their per-value type check.
    """
    ctx = _Ctx(file, line, no_booleans)
    if not isinstance(raw, dict):
        raise ctx.error(None, f"expected a JSON object, got {_kind(raw)}")
    if columns or needs_normalizing(raw):
        raw = normalize_record(raw, file=file, line=line, columns=columns)
    source = file if line is None else f"{file}:{line}"
    prompt = _text(ctx, raw.get(PROMPT), PROMPT)
    if raw.get(RESPONSES) is not None:
        return _ranking(ctx, raw, prompt, source)
    if raw.get(COMPLETION) is not None:
        return _unpaired(ctx, raw, prompt, source)
    chosen = _text(ctx, raw.get(CHOSEN), CHOSEN)
    rejected = _text(ctx, raw.get(REJECTED), REJECTED)
    if chosen == rejected:
        raise ctx.error(REJECTED, "expected a response different from 'chosen', got the same text")
    user, extra = _user_and_extra(ctx, raw, _PAIR_CORE)
    return Example(prompt, [chosen, rejected], None, user, extra, source)


def to_record(ex: Example) -> dict[str, Any]:
    """The inverse of `to_example`: an AlignX/persona pair record or a ranking record, extras kept.

    A pair is written as `chosen`/`rejected` when it has exactly 2 distinct responses and no
    rewards; anything else as `responses` (+ `rewards`). Persona aliases come back canonical.
    """
    rec: dict[str, Any] = {PROMPT: ex.prompt}
    r = ex.responses
    if len(r) == 2 and ex.rewards is None and r[0] != r[1]:
        rec[CHOSEN], rec[REJECTED] = r[0], r[1]
    elif len(r) == 1 and ex.label is not None:
        rec[COMPLETION], rec[LABEL] = r[0], ex.label
    else:
        rec[RESPONSES] = list(r)
        if ex.rewards is not None:
            rec[REWARDS] = list(ex.rewards)
    u = ex.user
    if u.direction is not None:
        rec[DIRECTION] = u.direction
    if u.demographic is not None:
        rec[DEMOGRAPHIC] = u.demographic
    if u.ugc:
        rec[UGC] = [_with_direction({"prompt": c.prompt, "comment": c.comment}, c.direction) for c in u.ugc]
    if u.pairs:
        rec[PAIRS] = [
            _with_direction({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}, p.direction)
            for p in u.pairs
        ]
    rec.update(u.personas)
    if u.profile is not None:
        rec[PROFILE] = u.profile
    rec.update(ex.extra)
    return rec


def _with_direction(item: dict[str, Any], direction: list[float] | None) -> dict[str, Any]:
    if direction is not None:
        item[DIRECTION] = direction
    return item

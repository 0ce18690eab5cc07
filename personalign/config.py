"""Typed configs: pydantic models loaded from a YAML file, command-line options and `key=value`
overrides, in that order of precedence (overrides win). Every command builds its config this way."""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from personalign.errors import UserError
from personalign.files import write_text

T = TypeVar("T", bound=BaseModel)


class ConfigError(UserError, ValueError):
    """A config file or override that does not fit its model."""


class StrictModel(BaseModel):
    """Base for configs: unknown keys are errors, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Turn ["a.b=1", "c=x"] into a nested dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(raw) if raw else ""
    return out


def _merge(base: dict[str, Any], upd: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in upd.items():
        merged[k] = _merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def options_dict(options: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys -> a nested dict; None values (options not given) are left out."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def load_config(model: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                options: dict[str, Any] | None = None) -> T:
    """Build `model` from an optional YAML file, then `options` (dotted key -> value, None = not
    given: a command's flags), then key=value overrides (which win)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read config: {e}", file=path) from None
        if not isinstance(data, dict):
            raise ConfigError("expected a mapping at the top level", file=path)
    flags = options_dict(options or {})
    given = parse_overrides(overrides or [])
    data = _merge(_merge(data, flags), given)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(_problem(err) for err in e.errors())
        tops = [err["loc"][0] if err["loc"] else None for err in e.errors()]
        from_file = path is not None and any(t not in given and t not in flags for t in tops)
        option = None if from_file else "key=value overrides" if any(t in given for t in tops) else "command-line options"
        raise ConfigError(f"invalid config: {problems}", file=path if from_file else None, option=option) from None


def _problem(err: dict) -> str:
    """One pydantic error as `key: message, got value`."""
    key = ".".join(map(str, err["loc"])) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    if err["type"] == "missing":
        return f"{key}: required (its option, the --config file or {key}=...)"
    got = err.get("input")
    shown = "" if isinstance(got, dict) or err["type"] == "missing" else f", got {got!r}"
    return f"{key}: {msg}{shown}"


def dump_config(cfg: BaseModel, path: str | Path) -> None:
    """Write a config as YAML (secrets are never config fields; keys come from the environment)."""
    write_text(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))

"""Typed configs: pydantic models loaded from a YAML file, command-line options and `key=value`
overrides, in that order of precedence (overrides win). Every command builds its config this way."""
from __future__ import annotations

import difflib
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from personalign.errors import UserError
from personalign.files import write_text

T = TypeVar("T", bound=BaseModel)


class ConfigError(UserError, ValueError):
    """A config file or override that does not fit its model."""


class StrictModel(BaseModel):
    """Base for configs: unknown keys are errors, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)


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
        def source(err: dict) -> str:
            loc = [str(p) for p in err["loc"]]
            for tree, name in ((given, "key=value override"), (flags, "command-line option")):
                if loc and _has(tree, loc):
                    return name
            return "config file" if path is not None and loc and _has(data_file, loc) else ""

        data_file = {} if path is None else yaml.safe_load(Path(path).read_text()) or {}
        errors = e.errors()
        sources = [source(err) for err in errors]
        marks = sources if len(set(sources)) > 1 else [""] * len(sources)  # one source: named once, at the end
        problems = "; ".join(_problem(err, model, src) for err, src in zip(errors, marks))
        from_file = "config file" in sources or (path is not None and "" in sources)
        option = None if from_file else "key=value overrides" if "key=value override" in sources else "command-line options"
        raise ConfigError(f"invalid config: {problems}", file=path if from_file else None, option=option) from None


def _has(tree: Any, loc: list[str]) -> bool:
    """True when the nested dict `tree` holds the key path `loc` (its first part at least)."""
    return isinstance(tree, dict) and loc[0] in tree and (len(loc) == 1 or not isinstance(tree[loc[0]], dict)
                                                          or _has(tree[loc[0]], loc[1:]))


# Names users reach for that are not ours: name -> ours.
SYNONYMS = {"lr": "learning_rate", "batch_size": "per_device_train_batch_size", "epochs": "num_train_epochs",
            "train_batch_size": "per_device_train_batch_size", "grad_accum": "gradient_accumulation_steps",
            "output": "output_dir", "out": "output_dir", "model_path": "model", "dataset": "data",
            "train_data": "data", "max_seq_length": "max_length", "warmup": "warmup_ratio"}


def _known_keys(model: type[BaseModel] | None, loc: tuple) -> list[str]:
    """The field names (and aliases) accepted where `loc` points, for suggestions."""
    for part in loc[:-1]:
        if model is None:
            return []
        field = model.model_fields.get(str(part))
        model = _nested_model(field.annotation) if field is not None else None
    if model is None:
        return []
    return [*model.model_fields, *getattr(model, "config_aliases", lambda: [])()]


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    for arg in (annotation, *get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def suggest(name: str, known: list[str]) -> str | None:
    """The known key closest to `name` (a synonym, or the nearest spelling), or None."""
    if SYNONYMS.get(name) in known:
        return SYNONYMS[name]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return close[0] if close else None


def _problem(err: dict, model: type[BaseModel] | None = None, source: str = "") -> str:
    """One pydantic error as `key: message, got value`, with where it came from."""
    key = ".".join(map(str, err["loc"])) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    where = f" (from the {source})" if source else ""
    if err["type"] == "extra_forbidden":
        near = suggest(str(err["loc"][-1]), _known_keys(model, err["loc"]))
        return f"{key}: unknown key{where}" + (f"; did you mean '{'.'.join([*map(str, err['loc'][:-1]), near])}'?"
                                               if near else "")
    if err["type"] == "missing":
        return f"{key}: required (its option, the --config file or {key}=...)"
    got = err.get("input")
    shown = "" if isinstance(got, dict) or err["type"] == "missing" else f", got {got!r}"
    return f"{key}: {msg}{shown}{where}"


def dump_config(cfg: BaseModel, path: str | Path) -> None:
    """Write a config as YAML (secrets are never config fields; keys come from the environment)."""
    write_text(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def config_reference(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) of every setting of `model`, nested settings as dotted keys."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        nested = _nested_model(field.annotation)
        if nested is not None:
            rows += config_reference(nested, f"{key}.")
            continue
        default = "(required)" if field.is_required() else repr(field.get_default(call_default_factory=True))
        kind = _type_name(Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation)
        rows.append((key, kind, default, field.description or ""))
    return rows


def _type_name(annotation: Any) -> str:
    """A readable type: `int > 0 | None`, `sigmoid|ipo|hinge`, `list[str]`."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "None"
    if origin is Literal:
        return "|".join(map(str, args))
    if origin is Annotated:
        bounds = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
        marks = [f"{sign} {getattr(m, k)}" for m in args[1:] for k, sign in bounds.items() if hasattr(m, k)]
        return " ".join([_type_name(args[0]), *marks])
    if origin in (Union, UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(annotation, "__name__", str(annotation))


def config_with(model: type[T], cfg: T | dict | None, settings: dict[str, Any]) -> T:
    """A `model` config from Python: `cfg` (a config, a dict, or None) with `settings` (field keywords) on top."""
    if cfg is None:
        return model.model_validate(settings)
    if isinstance(cfg, dict):
        return model.model_validate({**cfg, **settings})
    return cfg if not settings else model.model_validate({**cfg.model_dump(exclude_unset=True), **settings})

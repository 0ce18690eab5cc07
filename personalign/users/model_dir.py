"""A self-describing user-model directory: `usermodel.json` (representation, K, feature spec, fit
settings, provenance, metrics), `model.safetensors` (the shared part; none for `mean-diff`) and a
model card `README.md`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from personalign.errors import CorruptFileError, ModelError
from personalign.files import atomic_write, read_json_object, write_json, write_text
from personalign.users.features import FeatureSpec
from personalign.users.representations import MODELS, UserModel, make_model

CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "usermodel.json", "model.safetensors", "README.md"
KIND = "personalign-user-model"


def save_user_model(directory: str | os.PathLike, model: UserModel, spec: FeatureSpec, info: dict[str, Any]) -> Path:
    """Write `model` (its shared part), its feature spec and `info` (provenance, metrics) into `directory`."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if tensors:
        atomic_write(directory / WEIGHTS_FILE, lambda p: save_file(tensors, str(p)))
    extra = {"adapt_steps": getattr(model, "adapt_steps", None), "adapt_lr": getattr(model, "adapt_lr", None),
             "variant": getattr(model, "variant", None), "context": getattr(model, "context", None)}
    config = {"kind": KIND, "representation": model.name, "k": model.k, "dim": model.dim,
              "features": spec.model_dump(), **{k: v for k, v in extra.items() if v is not None}, **info}
    write_json(directory / CONFIG_FILE, config)
    write_text(directory / CARD_FILE, _card(config))
    return directory


def read_config(directory: str | os.PathLike, option: str = "--model") -> dict[str, Any]:
    """The `usermodel.json` of a user-model directory; anything else is one clear error."""
    path = Path(directory)
    if not path.is_dir():
        raise ModelError("not a user-model directory", file=path, option=option)
    if not (path / CONFIG_FILE).is_file():
        what = ("a policy or reward model (personalign.json), not a user model"
                if (path / "personalign.json").is_file() or (path / "config.json").is_file()
                else f"not a user-model directory (no {CONFIG_FILE})")
        raise ModelError(what, file=path, option=option)
    config = read_json_object(path / CONFIG_FILE)
    if config.get("kind") != KIND or config.get("representation") not in MODELS:
        raise ModelError(f"{CONFIG_FILE} does not describe a user model", file=path / CONFIG_FILE, option=option)
    return config


def load_user_model(directory: str | os.PathLike, option: str = "--model") -> tuple[UserModel, FeatureSpec, dict]:
    """(model, feature spec, config) of a directory written by `save_user_model`."""
    from safetensors.torch import load_file

    path = Path(directory)
    config = read_config(path, option)
    model = make_model(config["representation"], int(config["dim"]), config.get("k"), config.get("context") or "all",
                       config.get("variant") or "b")
    for name in ("adapt_steps", "adapt_lr", "variant", "context"):
        if name in config:
            setattr(model, name, config[name])
    if model.state_dict():
        try:
            model.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
        except (OSError, RuntimeError, ValueError) as e:
            raise CorruptFileError(f"unreadable user-model weights: {e}".splitlines()[0], file=path / WEIGHTS_FILE) from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, FeatureSpec.model_validate(config["features"]), config


def _card(config: dict[str, Any]) -> str:
    metrics = config.get("metrics") or {}
    rows = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items())
    lines = [
        "---", "library_name: personalign", "tags:", "- personalign", "- user-model",
        f"- {config['representation']}", "---", "",
        f"# personalign user model: `{config['representation']}`", "",
        "A reward r_u(x, y) per user over frozen features (docs/user-models.md). Load it with "
        "`personalign users eval --model DIR` or `personalign serve --user-model DIR`.", "",
        "| setting | value |", "|---|---|",
        f"| representation | `{config['representation']}` |", f"| K | {config.get('k')} |",
        f"| features | `{config['features']['encoder']}` `{config['features'].get('path') or 'packaged MiniLM'}` "
        f"(dimension {config['dim']}) |",
        f"| data | `{config.get('data')}` (digest `{config.get('data_digest')}`) |",
        f"| users | {config.get('users')} |", "",
    ]
    if rows:
        lines += ["## Metrics", "", "| metric | value |", "|---|---|", rows, ""]
    if config.get("command"):
        lines += ["## Command", "", "```bash", config["command"], "```", ""]
    return "\n".join(lines)


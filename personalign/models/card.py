"""What a model was trained with, saved beside it: `personalign.json` (read back by eval and serve)
and a Hub model card `README.md` (base model, loss, view, template, data fingerprint, final metrics,
the command).

Commands that render prompts for a trained model (`eval accuracy`, `eval generate`, `serve`) default
to the view and template in `personalign.json` and warn when they are told to use others.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from personalign.files import write_json, write_text

PROVENANCE_FILE = "personalign.json"
CARD_FILE = "README.md"
log = logging.getLogger("personalign")


def read_provenance(model: str | os.PathLike | None) -> dict[str, Any] | None:
    """The `personalign.json` of a local model directory, or None (none there, a hub id, the default)."""
    if model is None:
        return None
    path = Path(model).expanduser() / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.warning(f"{path}: unreadable ({e}); the view and template it records are not used")
        return None
    return data if isinstance(data, dict) else None


def trained_view(model: str | os.PathLike | None) -> dict[str, Any] | None:
    """The view config (`ViewConfig` fields) a model was trained with, or None."""
    info = read_provenance(model)
    view = None if info is None else info.get("view")
    return view if isinstance(view, dict) else None


def view_mismatch(trained: dict[str, Any] | None, view: str, template: str) -> str | None:
    """A warning when `view`/`template` differ from those a model was trained with (None when they agree)."""
    if trained is None:
        return None
    want = (trained.get("view"), trained.get("template"))
    if want == (view, template):
        return None
    return (f"the model was trained with view {want[0]!r} and template {want[1]!r}, but is used with view "
            f"{view!r} and template {template!r}; its prompts will not look like its training prompts")


def command_line() -> str:
    """The command that is running, as a shell line."""
    argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else []
    return shlex.join(argv)


def write_provenance(directory: str | os.PathLike, info: dict[str, Any]) -> None:
    """`personalign.json` and the model card `README.md` in `directory`."""
    directory = Path(directory)
    write_json(directory / PROVENANCE_FILE, info)
    write_text(directory / CARD_FILE, model_card(info))


def model_card(info: dict[str, Any]) -> str:
    """A Hub model card (YAML front matter + markdown) from a provenance record."""
    base = info.get("base_model")
    view = info.get("view") or {}
    front = ["---", "library_name: " + ("peft" if info.get("adapter") else "transformers"),
             "tags:", "- personalign", f"- {info.get('loss', 'dpo')}", "- personalized-alignment"]
    if info.get("loss") == "rm":
        front.append("- reward-model")
    if base and not Path(str(base)).is_absolute():
        front.append(f"base_model: {base}")
    front.append("---")
    metrics = info.get("metrics") or {}
    rows = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, (int, float)) else f"| {k} | {v} |"
                     for k, v in sorted(metrics.items()))
    lines = [
        *front, "",
        f"# {info.get('name') or 'personalign model'}", "",
        f"Trained with [personalign](https://github.com/) {info.get('personalign_version', '')}: "
        f"loss `{info.get('loss')}`" + (f" (`{info.get('loss_type')}`)" if info.get("loss") == "dpo" else "")
        + (", LoRA adapter" if info.get("adapter") else ", full fine-tuning") + ".", "",
        "| setting | value |", "|---|---|",
        f"| base model | `{base}` |",
        f"| view | `{view.get('view')}` |",
        f"| template | `{view.get('template')}` |",
        f"| data | `{info.get('data')}` (sha256 prefix `{info.get('data_digest')}`) |",
        f"| records | {info.get('records')} |",
        f"| steps | {info.get('steps')} |", "",
        "Prompts must be rendered with the same view and template; `personalign eval` and `personalign serve` "
        "read them from `personalign.json` in this directory.", "",
    ]
    if info.get("loss") == "rm":
        lines += ["A reward model (`AutoModelForSequenceClassification`, one label): the reward of a response is "
                  "the score at its end-of-sequence token, after the prompt rendered as above. Evaluate it with "
                  "`personalign eval rm`; rerank samples with `personalign eval generate --best-of N --reward-model`.",
                  ""]
    if rows:
        lines += ["## Final metrics", "", "| metric | value |", "|---|---|", rows, ""]
    if info.get("command"):
        lines += ["## Command", "", "```bash", info["command"], "```", ""]
    return "\n".join(lines)


def copy_provenance(src: Path, dst: Path, **update: Any) -> None:
    """Carry `personalign.json` (updated) and a fresh model card from `src` to an exported `dst`."""
    info = read_provenance(src)
    if info is not None:
        write_provenance(dst, {**info, **update})


def push_to_hub(directory: str | os.PathLike, repo_id: str, *, private: bool | None = None,
                message: str = "personalign: upload model") -> str:
    """Upload a model directory to the Hub (token from `HF_TOKEN` or the huggingface-cli login); returns the URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=os.fspath(directory), commit_message=message)
    return str(url)


def with_trained_view(cfg: Any, model: str | os.PathLike | None, field: str = "view") -> Any:
    """`cfg` with `field` set to the view a trained `model` records (all history) when the user gave
    none; with a warning when the user's view or template differs from it."""
    from personalign.views.build import ViewConfig

    trained = trained_view(model)
    if trained is None:
        return cfg
    if field not in cfg.model_fields_set:
        view = ViewConfig.model_validate({**trained, "sample_history": False})
        log.info(f"view {view.view!r}, template {view.template!r}: as the model was trained ({PROVENANCE_FILE})")
        return cfg.model_copy(update={field: view})
    current = getattr(cfg, field)
    warning = view_mismatch(trained, current.view, current.template)
    if warning:
        log.warning(warning)
    return cfg

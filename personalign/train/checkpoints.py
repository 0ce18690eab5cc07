"""Training checkpoints and exported models.

A run directory holds `checkpoint-<step>/` (accelerate state: model, optimizer, scheduler, RNG
states; plus `trainer_state.json` and `train_config.yaml`) and `final/`, a plain HF model
directory (full weights + tokenizer, or a LoRA adapter + tokenizer). A checkpoint is written to
`checkpoint-<step>.tmp` and renamed when complete, so a killed run never leaves a half checkpoint
that `latest` could pick.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from personalign.config import dump_config, load_config
from personalign.models.lora import apply_lora, load_lora, merge_lora

STATE_FILE = "trainer_state.json"
CONFIG_FILE = "train_config.yaml"
FINAL_DIR = "final"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _CHECKPOINT.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def read_state(checkpoint: str | os.PathLike) -> dict:
    return json.loads((Path(checkpoint) / STATE_FILE).read_text())


def resolve_checkpoint(spec: str, output_dir: str | os.PathLike) -> Path:
    """`latest` -> the newest complete checkpoint in `output_dir`; otherwise a checkpoint directory."""
    if spec == "latest":
        found = checkpoints(output_dir)
        if not found:
            raise FileNotFoundError(f"resume_from_checkpoint=latest: no checkpoint in {output_dir}")
        return found[-1]
    path = Path(spec)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{spec} is not a checkpoint directory (no {STATE_FILE})")
    return path


def best_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint with the best recorded metric (the latest among equals), or None."""
    scored = [(p, read_state(p)["metric"]) for p in checkpoints(output_dir)]
    scored = [(p, m) for p, m in scored if m is not None]
    if not scored:
        return None
    sign = lambda m: m["value"] if m["greater_is_better"] else -m["value"]  # noqa: E731
    return max(reversed(scored), key=lambda pm: sign(pm[1]))[0]


def save_checkpoint(accelerator, output_dir: Path, step: int, state: dict, config) -> Path:
    """Save the accelerate state of every process plus the trainer state; returns the directory."""
    final, tmp = output_dir / f"checkpoint-{step}", output_dir / f"checkpoint-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
        dump_config(config, tmp / CONFIG_FILE)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    accelerator.wait_for_everyone()
    return final


def prune_checkpoints(output_dir: str | os.PathLike, limit: int | None) -> list[Path]:
    """Delete the oldest checkpoints beyond `limit`, never the last or the best; returns the deleted."""
    found = checkpoints(output_dir)
    if limit is None or len(found) <= limit:
        return []
    keep = {found[-1], best_checkpoint(output_dir)}
    deleted = []
    for p in found:
        if len(found) - len(deleted) <= limit:
            break
        if p not in keep:
            shutil.rmtree(p)
            deleted.append(p)
    return deleted


def save_final(accelerator, model, tokenizer, directory: Path) -> Path:
    """Write the trained policy as an HF directory: LoRA adapter or full weights, plus the tokenizer."""
    unwrapped = accelerator.unwrap_model(model)
    if hasattr(unwrapped, "peft_config"):
        unwrapped.save_pretrained(directory, is_main_process=accelerator.is_main_process, safe_serialization=True)
    else:
        state_dict = accelerator.get_state_dict(model)
        unwrapped.save_pretrained(directory, is_main_process=accelerator.is_main_process, state_dict=state_dict,
                                  save_function=accelerator.save, safe_serialization=True)
    if accelerator.is_main_process:
        tokenizer.save_pretrained(directory)
    accelerator.wait_for_everyone()
    return directory


def export_model(source: str | os.PathLike, out: str | os.PathLike, *, merge: bool = False) -> Path:
    """Write an HF model directory from a run, its `final/`, or a `checkpoint-<step>/`.

    A run directory means its `final/` (its newest checkpoint when there is none). A full model
    is written as is; a LoRA adapter is copied, or with `merge` folded into its base model and
    written as a full model (safetensors + tokenizer).
    """
    src, out = Path(source), Path(out)
    if not src.is_dir():
        raise FileNotFoundError(f"{source} is not a directory")
    if not (src / STATE_FILE).is_file() and not _is_hf_dir(src):
        if _is_hf_dir(src / FINAL_DIR):
            src = src / FINAL_DIR
        elif checkpoints(src):
            src = checkpoints(src)[-1]
        else:
            raise FileNotFoundError(f"{source}: no final model and no checkpoint to export")
    if out.resolve() == src.resolve():
        raise ValueError("--out must differ from the exported directory")
    if (src / STATE_FILE).is_file():
        model, tokenizer = _model_from_checkpoint(src)
    elif (src / "adapter_config.json").is_file() and merge:
        base_name = json.loads((src / "adapter_config.json").read_text())["base_model_name_or_path"]
        model = load_lora(AutoModelForCausalLM.from_pretrained(base_name, dtype=torch.float32), src)
        tokenizer = AutoTokenizer.from_pretrained(src if (src / "tokenizer_config.json").is_file() else base_name)
    else:
        shutil.copytree(src, out, dirs_exist_ok=True)
        return out
    if merge and hasattr(model, "peft_config"):
        model = merge_lora(model)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def _is_hf_dir(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


def _model_from_checkpoint(checkpoint: Path):
    """Rebuild the policy of a checkpoint: its starting model (+ LoRA) with the saved weights."""
    from personalign.models.loading import load_model
    from personalign.train.config import TrainConfig

    cfg = load_config(TrainConfig, checkpoint / CONFIG_FILE)
    model, tokenizer = load_model(cfg.model)
    if cfg.lora is not None:
        model = apply_lora(model, cfg.lora)
    missing, unexpected = model.load_state_dict(load_file(str(checkpoint / "model.safetensors")), strict=False)
    tied = {k for k in missing if _is_tied(model, k)}
    if unexpected or set(missing) - tied:
        raise ValueError(f"{checkpoint}: weights do not fit the model (missing {sorted(set(missing) - tied)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]})")
    return model, tokenizer


def _is_tied(model, key: str) -> bool:
    """True when parameter `key` shares storage with another parameter (tied embeddings)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    if key not in params:
        return False
    ptr = params[key].data_ptr()
    return any(p.data_ptr() == ptr for k, p in params.items() if k != key)

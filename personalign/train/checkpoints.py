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
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from personalign.config import dump_config, load_config
from personalign.errors import CorruptFileError, MissingExtraError, OutputError, UserError, require_extra
from personalign.files import atomic_dir, check_output_dir, write_json
from personalign.files import read_json_object as _read_json
from personalign.models.card import command_line, copy_provenance, write_provenance
from personalign.models.loading import load_tokenizer
from personalign.models.lora import load_lora, merge_lora
from personalign.models.rewards import load_reward_model
from personalign.train.build import load_policy, trainable_module
from personalign.train.sharding import FSDP_MODEL_DIR, full_state_dict, is_sharded, save_sharded

STATE_FILE = "trainer_state.json"
CONFIG_FILE = "train_config.yaml"
FINAL_DIR = "final"
METRICS_FILE = "metrics.jsonl"
EXPORT_MARKER = "personalign-export.json"
# What `train` writes into output_dir: a directory holding anything else is refused without overwrite_output_dir.
TRAIN_OUTPUTS = ("checkpoint-*", FINAL_DIR, METRICS_FILE, CONFIG_FILE, "tensorboard", "events.out.tfevents.*",
                 "runs", "*.tmp", "wandb", "mlruns", "trackio")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
POLICY_PREFIX = "model."  # `ResponseLogprobs.model`
ZERO_MODEL_DIR = "pytorch_model"  # accelerate's DeepSpeed checkpoint tag: <checkpoint>/pytorch_model/ (ZeRO partitions)


def checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _CHECKPOINT.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def read_state(checkpoint: str | os.PathLike, required: tuple[str, ...] = ()) -> dict:
    """A checkpoint's trainer state; a truncated or foreign file, or one without the `required`
    keys, is a `CorruptFileError`."""
    path = Path(checkpoint) / STATE_FILE
    try:
        state = _read_json(path)
    except CorruptFileError as e:
        raise CorruptFileError(f"the checkpoint's trainer state: {e.message}; resume from another checkpoint or "
                               "delete this one", file=path) from None
    missing = [k for k in required if k not in state]
    if missing:
        raise CorruptFileError("the trainer state lacks " + ", ".join(missing), file=path)
    return state


def resolve_checkpoint(spec: str, output_dir: str | os.PathLike) -> Path:
    """`latest` -> the newest complete checkpoint in `output_dir`; otherwise a checkpoint directory."""
    if spec == "latest":
        found = checkpoints(output_dir)
        if not found:
            raise UserError("resume_from_checkpoint=latest: no checkpoint in the output directory", file=output_dir)
        return found[-1]
    path = Path(spec)
    if not (path / STATE_FILE).is_file():
        raise UserError(f"resume_from_checkpoint: not a checkpoint directory (no {STATE_FILE})", file=path)
    return path


def best_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint with the best recorded metric (the latest among equals), or None."""
    scored = [(p, read_state(p)["metric"]) for p in checkpoints(output_dir)]
    scored = [(p, m) for p, m in scored if m is not None]
    if not scored:
        return None
    sign = lambda m: m["value"] if m["greater_is_better"] else -m["value"]  # noqa: E731
    return max(reversed(scored), key=lambda pm: sign(pm[1]))[0]


def save_checkpoint(accelerator, output_dir: Path, step: int, state: dict, config, prepared: tuple) -> Path:
    """Save the accelerate state of every process plus the trainer state; returns the directory.
    `prepared` is (model, optimizer, scheduler): a model sharded by `sharding.shard` is saved by it."""
    final, tmp = output_dir / f"checkpoint-{step}", output_dir / f"checkpoint-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    if is_sharded(prepared[0]):
        save_sharded(accelerator, *prepared, tmp)
    else:
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
    unwrapped = getattr(unwrapped, "model", unwrapped)  # the policy inside `ResponseLogprobs`
    if hasattr(unwrapped, "peft_config"):
        unwrapped.save_pretrained(directory, is_main_process=accelerator.is_main_process, safe_serialization=True)
    else:
        state_dict = _policy_state(full_state_dict(model) if is_sharded(model) else accelerator.get_state_dict(model))
        unwrapped.save_pretrained(directory, is_main_process=accelerator.is_main_process, state_dict=state_dict,
                                  save_function=accelerator.save, safe_serialization=True)
    if accelerator.is_main_process:
        tokenizer.save_pretrained(directory)
    accelerator.wait_for_everyone()
    return directory


def export_model(source: str | os.PathLike, out: str | os.PathLike, *, merge: bool = False,
                 overwrite: bool = False) -> Path:
    """Write an HF model directory from a run, its `final/`, or a `checkpoint-<step>/`.

    A run directory means its `final/` (its newest checkpoint when there is none). A full model
    is written as is; a LoRA adapter is copied, or with `merge` folded into its base model and
    written as a full model (safetensors + tokenizer). The result is built aside and replaces `out`
    whole, so two models' files never mix; a non-empty `out` that is not an earlier export is
    refused unless `overwrite`.
    """
    out = Path(out)
    src = export_source(source)
    check_export_target(src, out, overwrite=overwrite)
    if (src / STATE_FILE).is_file():
        read_state(src)
        cfg = _checkpoint_config(src)
        model, tokenizer = _model_from_checkpoint(src, cfg)
    elif (src / "adapter_config.json").is_file() and merge:
        base_name = _read_json(src / "adapter_config.json").get("base_model_name_or_path")
        if not base_name:
            raise CorruptFileError("the adapter config names no base_model_name_or_path",
                                   file=src / "adapter_config.json")
        if _read_json(src / "adapter_config.json").get("task_type") == "SEQ_CLS":  # a reward model
            model, tokenizer = load_reward_model(src)
        else:
            model = load_lora(AutoModelForCausalLM.from_pretrained(base_name, dtype=torch.float32), src)
            tokenizer = load_tokenizer(src if (src / "tokenizer_config.json").is_file() else base_name)
    else:
        if (src / "adapter_config.json").is_file():
            _read_json(src / "adapter_config.json")
        with atomic_dir(out) as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            write_json(tmp / EXPORT_MARKER, {"source": str(src), "merge": False})
        return out
    adapter = hasattr(model, "peft_config")
    if merge and adapter:
        model = merge_lora(model)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / EXPORT_MARKER, {"source": str(src), "merge": merge})
        update = {"adapter": adapter and not merge, "exported_from": str(src), "command": command_line()}
        if (src / STATE_FILE).is_file():
            write_provenance(tmp, {**provenance(cfg), "steps": read_state(src)["step"], **update})
        else:
            copy_provenance(src, tmp, **update)
    return out


def provenance(cfg, **extra) -> dict:
    """The `personalign.json` record of a model trained with `cfg` (see `personalign.models.card`)."""
    from personalign.files import data_digest
    from personalign.version import __version__

    return {"personalign_version": __version__, "name": cfg.run_name or Path(cfg.output_dir).resolve().name,
            "base_model": cfg.model or "SmolLM2-135M-Instruct (personalign's embedded default)",
            "loss": cfg.loss, "loss_type": cfg.loss_type, "adapter": cfg.lora is not None,
            "view": cfg.view.model_dump(mode="json"), "max_length": cfg.max_length, "data": cfg.data,
            "data_digest": data_digest(cfg.data), "command": command_line(), **extra}


def export_source(source: str | os.PathLike) -> Path:
    """What `export_model` exports from `source`: itself, its `final/`, or its newest checkpoint."""
    src = Path(source)
    if not src.is_dir():
        raise UserError("not a directory: expected a run, final/ or checkpoint-<step>/ directory", file=src)
    if not (src / STATE_FILE).is_file() and not _is_hf_dir(src):
        if _is_hf_dir(src / FINAL_DIR):
            return src / FINAL_DIR
        if checkpoints(src):
            return checkpoints(src)[-1]
        raise UserError("no final model and no checkpoint to export", file=src)
    return src


def check_export_target(src: Path, out: Path, *, overwrite: bool) -> None:
    """Refuse an export target that overlaps the source, or that holds files other than an earlier export."""
    s, o = src.resolve(), out.resolve()
    if o == s or s in o.parents or o in s.parents:
        raise OutputError("--out must lie outside the exported directory (and not contain it)", file=out)
    own = not out.is_dir() or (out / EXPORT_MARKER).is_file()
    check_output_dir(out, own=("*",) if own else (), overwrite=overwrite)


def _checkpoint_config(checkpoint: Path):
    from personalign.train.config import TrainConfig

    return load_config(TrainConfig, checkpoint / CONFIG_FILE)


def _is_hf_dir(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


def _checkpoint_weights(checkpoint: Path) -> dict:
    """The state dict a checkpoint holds: `model.safetensors` (one process, DDP), the sharded
    `pytorch_model_fsdp_0/` that accelerate writes under FSDP's SHARDED_STATE_DICT (one file per
    rank, torch.distributed.checkpoint), gathered here into one state dict without a process group,
    or DeepSpeed's `pytorch_model/` ZeRO partitions, gathered by DeepSpeed's own `zero_to_fp32`."""
    if (checkpoint / ZERO_MODEL_DIR).is_dir():
        return _zero_weights(checkpoint)
    sharded = checkpoint / f"{FSDP_MODEL_DIR}_0"
    if sharded.is_dir():
        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

        with tempfile.TemporaryDirectory() as tmp:
            try:
                dcp_to_torch_save(sharded, Path(tmp) / "model.pt")
                return torch.load(Path(tmp) / "model.pt", weights_only=True)["model"]
            except (OSError, RuntimeError, KeyError, ValueError) as e:
                raise CorruptFileError(f"cannot read the sharded checkpoint ({type(e).__name__}: {e})",
                                       file=sharded) from None
    weights = checkpoint / "model.safetensors"
    try:
        return load_file(str(weights))
    except (OSError, SafetensorError) as e:
        raise CorruptFileError(f"cannot read the checkpoint's weights ({e})", file=weights) from None


def _zero_weights(checkpoint: Path) -> dict:
    try:
        require_extra("deepspeed", "exporting a checkpoint of DeepSpeed ZeRO partitions")
    except MissingExtraError as e:
        raise MissingExtraError(e.message, file=checkpoint / ZERO_MODEL_DIR) from None
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    try:
        return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), tag=ZERO_MODEL_DIR)
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        raise CorruptFileError(f"cannot read the ZeRO checkpoint ({type(e).__name__}: {e})",
                               file=checkpoint / ZERO_MODEL_DIR) from None


def _model_from_checkpoint(checkpoint: Path, cfg):
    """Rebuild the policy of a checkpoint: its starting model (+ LoRA) with the saved weights."""
    state = _checkpoint_weights(checkpoint)  # before the model loads: a bad checkpoint fails fast
    start, tokenizer = load_policy(cfg)
    wrapped = trainable_module(start, cfg)  # checkpoints hold the state of the module accelerate prepared
    model = wrapped.model
    missing, unexpected = wrapped.load_state_dict(state, strict=False)
    tied = {k for k in missing if _is_tied(wrapped, k)}
    if cfg.lora is not None:  # adapter-only checkpoints: the frozen base comes from cfg.model
        tied |= {n for n, p in wrapped.named_parameters() if not p.requires_grad}
    if unexpected or set(missing) - tied:
        raise ValueError(f"{checkpoint}: weights do not fit the model (missing {sorted(set(missing) - tied)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]})")
    return model, tokenizer


def _policy_state(state: dict) -> dict:
    """The policy's own keys of a `ResponseLogprobs` state dict (its weights sit under `model.`)."""
    return {k.removeprefix(POLICY_PREFIX): v for k, v in state.items()}


def _is_tied(model, key: str) -> bool:
    """True when parameter `key` shares storage with another parameter (tied embeddings)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    if key not in params:
        return False
    ptr = params[key].data_ptr()
    return any(p.data_ptr() == ptr for k, p in params.items() if k != key)

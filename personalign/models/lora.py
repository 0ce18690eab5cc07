"""LoRA through `peft`: wrap a causal LM with adapters, load saved adapters, merge them back."""
from __future__ import annotations

import os

from peft import LoraConfig, PeftModel, get_peft_model
from pydantic import PositiveInt
from transformers import PreTrainedModel

from personalign.config import StrictModel


class LoraSettings(StrictModel):
    """LoRA hyper-parameters (peft's names); `target_modules="all-linear"` adapts every linear layer
    except the output head."""

    r: PositiveInt = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"


def apply_lora(model: PreTrainedModel, settings: LoraSettings) -> PeftModel:
    """Wrap `model` with fresh LoRA adapters; only the adapter weights stay trainable.

    Adapters start as a no-op (B = 0), so the wrapped model scores exactly like `model`.
    """
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=settings.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def load_lora(base: PreTrainedModel, adapter_dir: str | os.PathLike) -> PeftModel:
    """Attach the adapter saved in `adapter_dir` (by `save_pretrained`) to `base`."""
    return PeftModel.from_pretrained(base, os.fspath(adapter_dir))


def merge_lora(model: PeftModel) -> PreTrainedModel:
    """Fold the adapters into the base weights and return the plain model."""
    return model.merge_and_unload()

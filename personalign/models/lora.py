"""LoRA through `peft`: wrap a causal LM with adapters, load saved adapters, merge them back."""
from __future__ import annotations

import contextlib
import os
import warnings
from typing import TYPE_CHECKING

from pydantic import PositiveInt

from personalign.config import StrictModel

if TYPE_CHECKING:  # peft and transformers load when adapters are made, not when a config is read
    from peft import PeftModel
    from transformers import PreTrainedModel


class LoraSettings(StrictModel):
    """LoRA hyper-parameters (peft's names); `target_modules="all-linear"` adapts every linear layer
    except the output head."""

    r: PositiveInt = 16
    """Adapter rank."""
    lora_alpha: float = 32.0
    """Adapter scale numerator (scale = lora_alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the adapter input."""
    target_modules: str | list[str] = "all-linear"
    """Module names to adapt, or all-linear."""


@contextlib.contextmanager
def _peft_checkpointing_probe():
    """peft's PeftModel probes transformers' deprecated `is_gradient_checkpointing` (a FutureWarning on
    every wrap); that probe is peft's, not something a user can act on, so it is silenced here only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def apply_lora(model: PreTrainedModel, settings: LoraSettings, *, task_type: str = "CAUSAL_LM") -> PeftModel:
    """Wrap `model` with fresh LoRA adapters; only the adapter weights stay trainable (and, for
    task_type SEQ_CLS, the score head, which peft keeps whole: `modules_to_save`).

    Adapters start as a no-op (B = 0), so the wrapped model scores exactly like `model`.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=settings.target_modules,
        task_type=task_type,
    )
    with _peft_checkpointing_probe():
        return get_peft_model(model, config)


def load_lora(base: PreTrainedModel, adapter_dir: str | os.PathLike) -> PeftModel:
    """Attach the adapter saved in `adapter_dir` (by `save_pretrained`) to `base`."""
    from peft import PeftModel

    with _peft_checkpointing_probe():
        return PeftModel.from_pretrained(base, os.fspath(adapter_dir))


def merge_lora(model: PeftModel) -> PreTrainedModel:
    """Fold the adapters into the base weights and return the plain model."""
    return model.merge_and_unload()

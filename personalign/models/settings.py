"""How a model is loaded, as config keys every model-loading command shares (no torch import, so
configs that name them stay light): weight dtype, attention kernel, remote code, 4/8-bit weights."""
from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from personalign.config import StrictModel

DType = Literal["auto", "bfloat16", "float16", "float32"]
QuantType = Literal["nf4", "fp4"]  # "auto": the dtype the checkpoint's config names
AttnImplementation = Literal["sdpa", "flash_attention_2", "flex_attention", "eager"]
# Kernels the shared-prefix scorer (training and log-prob scoring) runs on: sdpa and eager take its
# 4-D additive mask; flex_attention takes a block mask built from the segments (no L x L float mask).
# flash_attention_2 serves generation.
MASK_ATTN_IMPLEMENTATIONS: tuple[str, ...] = ("sdpa", "eager", "flex_attention")
# From this many tokens of prompt + longest response on a GPU, scoring under the default kernel
# switches to flex_attention (no L x L float mask per sequence).
FLEX_FROM_LENGTH = 4096


class ModelSettings(StrictModel):
    """Mixed into every config that loads a model: the weights are loaded directly in `dtype`
    (no fp32 copy first), with the `attn_implementation` kernel; `trust_remote_code` runs a
    model repository's own Python and is off unless asked for."""

    dtype: DType = "float32"
    """Weight dtype when loading (auto: the checkpoint's own)."""
    attn_implementation: AttnImplementation = "sdpa"
    """Attention kernel."""
    trust_remote_code: bool = False
    """Run the model repository's own Python code (off unless asked for)."""
    load_in_4bit: bool = False
    """Load the weights in 4 bits through bitsandbytes (CUDA only; training then needs LoRA: QLoRA)."""
    load_in_8bit: bool = False
    """Load the weights in 8 bits through bitsandbytes (CUDA only; training then needs LoRA)."""
    bnb_4bit_quant_type: QuantType = "nf4"
    """4-bit data type (nf4 or fp4)."""
    use_bnb_nested_quant: bool = False
    """Quantize the 4-bit quantization constants too (nested quantization)."""

    @model_validator(mode="after")
    def _one_quantization(self):
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError("load_in_4bit and load_in_8bit: choose one")
        return self

    @property
    def quantized(self) -> bool:
        return self.load_in_4bit or self.load_in_8bit

    def kernel_key(self) -> dict:
        """The attention kernel as a cache-key part when it is not the default (sdpa keys stay as they were)."""
        return {} if self.attn_implementation == "sdpa" else {"attn_implementation": self.attn_implementation}

    def load_kwargs(self) -> dict:
        """Keyword arguments of `personalign.models.loading.load_model`."""
        quantization = {"load_in_4bit": self.load_in_4bit, "load_in_8bit": self.load_in_8bit,
                        "bnb_4bit_quant_type": self.bnb_4bit_quant_type,
                        "use_bnb_nested_quant": self.use_bnb_nested_quant} if self.quantized else {}
        return {"dtype": self.dtype, "attn_implementation": self.attn_implementation,
                "trust_remote_code": self.trust_remote_code, **quantization}


class ScoringModelSettings(ModelSettings):
    """Model settings of a command that scores log-probs with the shared-prefix scorer (training,
    alignment accuracy): its attention kernel must take a 4-D mask, checked before any model loads."""

    def scoring_kernel(self, max_length: int | None, device_type: str) -> str:
        """The kernel the packed scorer runs: the configured one, except that the default `sdpa`
        becomes `flex_attention` for sequences of `FLEX_FROM_LENGTH` tokens or more on CUDA."""
        long = max_length is None or max_length >= FLEX_FROM_LENGTH
        if self.attn_implementation == "sdpa" and long and device_type == "cuda":
            return "flex_attention"
        return self.attn_implementation

    @model_validator(mode="after")
    def _mask_kernel(self):
        if self.attn_implementation not in MASK_ATTN_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation {self.attn_implementation!r} cannot score packed prompts and "
                             f"responses yet; use one of {', '.join(MASK_ATTN_IMPLEMENTATIONS)} (the others serve "
                             "generation: eval generate, serve)")
        return self

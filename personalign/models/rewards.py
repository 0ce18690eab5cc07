"""Reward models: a scalar head on a causal LM (transformers' `...ForSequenceClassification`, one label),
read at each response's last token of the engine's packed sequences.

A record's prompt and its responses are packed as for log-probs (`personalign.models.logprobs`):
one sequence prompt ‖ r1 ‖ … ‖ rk, each response seeing the prompt and itself only, so the prompt
is encoded once for the chosen and the rejected response (or a whole ranking). The decoder's
hidden state at the last token of response j (its EOS) goes through the score head: reward j.
That equals the sequence-classification model's own output on prompt ‖ rj alone, which pools the
last token (`tests/models/test_rewards.py` checks it against a plain forward).
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from personalign.models.loading import check_model_dir, load_tokenizer, quantization_config, resolve_model
from personalign.models.logprobs import PackedBatch, packed_attention_mask, packed_block_mask, unwrap
from personalign.models.settings import MASK_ATTN_IMPLEMENTATIONS


@contextlib.contextmanager
def _quiet_new_head():
    """transformers warns that the score head of a causal LM loaded for sequence classification is newly
    initialised; for a reward model about to be trained that is the point, so the warning is dropped."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def load_reward_model(
    name: str | os.PathLike | None,
    *,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
    attn_implementation: str | None = "sdpa",
    trust_remote_code: bool = False,
    **quantization,
):
    """(model, tokenizer) of a one-label sequence-classification model in eval mode, from a reward model
    directory, a LoRA adapter trained as one (`loss: rm`), or a causal LM (its score head starts random).
    The pad token id is set, so the model's own last-token pooling works. `quantization`: as `load_model`."""
    from transformers import AutoModelForSequenceClassification

    quantized = quantization_config(device, **quantization)
    path = resolve_model(name)
    check_model_dir(path, kind="any")
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype
    kwargs = dict(num_labels=1, dtype=torch_dtype, attn_implementation=attn_implementation,
                  trust_remote_code=trust_remote_code)
    if quantized is not None:
        kwargs |= {"quantization_config": quantized, "device_map": {"": torch.device(device)}}
    adapter = Path(path) / "adapter_config.json"
    with _quiet_new_head():
        if adapter.is_file():
            from personalign.models.lora import load_lora

            base = json.loads(adapter.read_text(encoding="utf-8"))["base_model_name_or_path"]
            model = load_lora(AutoModelForSequenceClassification.from_pretrained(base, **kwargs), path)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    config = _hf_model(model).config
    if config.num_labels != 1:
        raise ValueError(f"{path}: a reward model needs num_labels=1, got {config.num_labels}")
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    return (model if quantized is not None else model.to(device)).eval(), tokenizer


def _hf_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside DDP-style `.module` wrappers and a PeftModel (LoRA layers stay in it)."""
    model = unwrap(model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def packed_rewards(model: torch.nn.Module, batch: PackedBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards `[B, R]` (fp32, differentiable; 0 in padded slots) and token counts `[B, R]`: the score
    head on the decoder's hidden state at each response's last token."""
    hf = _hf_model(model)
    config = hf.config.get_text_config()
    if config._attn_implementation not in MASK_ATTN_IMPLEMENTATIONS:
        raise ValueError(f"packed scoring needs attn_implementation in {MASK_ATTN_IMPLEMENTATIONS}, "
                         f"got {config._attn_implementation!r}")
    decoder, head = hf.base_model, hf.score
    dtype = hf.get_input_embeddings().weight.dtype
    flex = config._attn_implementation == "flex_attention"
    mask = packed_block_mask(batch.segment_ids) if flex else packed_attention_mask(batch.segment_ids, dtype)
    hidden = decoder(input_ids=batch.input_ids, attention_mask=mask, position_ids=batch.position_ids,
                     use_cache=False).last_hidden_state
    rows, n_resp = batch.n_tokens.shape
    last = torch.zeros(rows * n_resp, dtype=torch.long, device=hidden.device)
    last = last.scatter_reduce(0, batch.slots, batch.pred_cols + 1, reduce="amax")  # each response's last column
    slot_rows = torch.arange(rows * n_resp, device=hidden.device) // n_resp
    scores = head(hidden[slot_rows, last]).squeeze(-1).float()
    present = batch.n_tokens.reshape(-1) > 0
    return torch.where(present, scores, torch.zeros_like(scores)).view(rows, n_resp), batch.n_tokens


class ResponseRewards(torch.nn.Module):
    """Wraps a reward model; forward(**packed batch) -> (`[B, R]` rewards, `[B, R]` counts), the same
    contract as `ResponseLogprobs`, so the training loop and `score_store` run it unchanged."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, **batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return packed_rewards(self.model, PackedBatch(**batch))


def is_reward_model(model: Any) -> bool:
    """Whether `model` (or the one inside its wrappers) is a sequence-classification model."""
    return type(_hf_model(model)).__name__.endswith("ForSequenceClassification")

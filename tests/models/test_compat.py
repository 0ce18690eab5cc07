"""The KV cache's name follows the installed transformers: a forward takes it and returns it under it."""
from __future__ import annotations

import inspect

import torch
from transformers import LlamaForCausalLM

from personalign.models.compat import CACHE, output_cache, with_cache


def test_the_cache_name_is_the_one_this_transformers_uses(tiny_lm):
    assert CACHE in inspect.signature(LlamaForCausalLM.forward).parameters
    model, _ = tiny_lm
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        first = model(input_ids=ids[:, :3], use_cache=True)
        step = model(input_ids=ids[:, 3:], **with_cache(output_cache(first)), use_cache=True).logits[:, -1]
        whole = model(input_ids=ids).logits[:, -1]
    assert output_cache(first) is not None and torch.allclose(step, whole, atol=1e-5)

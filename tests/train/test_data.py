"""The reference pass's model: LoRA adapters disabled while it scores, and the starting weights loaded where
the launch shards them (the CPU, so no device holds the whole model)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from accelerate import DistributedType

from personalign.models.lora import LoraSettings, apply_lora
from personalign.models.scorer import InMemoryRows, ResponseLogprobs, score_store
from personalign.records.tokens import tokenize_pair
from personalign.testing import tiny_causal_lm
from personalign.train.build import load_device
from personalign.train.config import TrainConfig
from personalign.train.data import without_adapters


class Prepared(torch.nn.Module):
    """A stand-in for accelerate's DDP-style wrapper (`.module`)."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, **batch):
        return self.module(**batch)


def test_without_adapters_scores_the_base_model_and_restores_them():
    base, tok = tiny_causal_lm(seed=3)
    policy = apply_lora(tiny_causal_lm(tok, seed=3)[0], LoraSettings(r=4, lora_alpha=8, lora_dropout=0.0))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.copy_(0.2 * torch.randn_like(p))
    rows = InMemoryRows([tokenize_pair(tok, f"User {i} asks how to rest. " * (1 + i), ["Sleep early.", "No."])
                         for i in range(3)])
    expected = score_store(ResponseLogprobs(base), rows, progress=False).logps
    prepared = Prepared(ResponseLogprobs(policy))
    adapted = score_store(prepared, rows, progress=False).logps
    assert (adapted - expected).abs().max() > 1e-2  # the adapters change the scores
    with without_adapters(prepared):
        torch.testing.assert_close(score_store(prepared, rows, progress=False).logps, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(score_store(prepared, rows, progress=False).logps, adapted, atol=1e-6, rtol=0)
    plain = Prepared(ResponseLogprobs(base))
    with without_adapters(plain):  # no adapters: nothing to disable
        torch.testing.assert_close(score_store(plain, rows, progress=False).logps, expected, atol=0, rtol=0)


@pytest.mark.parametrize(("kind", "zero_stage", "quantized", "where"), [
    (DistributedType.FSDP, None, False, "cpu"),
    (DistributedType.DEEPSPEED, 3, False, "cpu"),
    (DistributedType.DEEPSPEED, 2, False, "device"),
    (DistributedType.MULTI_GPU, None, False, "device"),
    (DistributedType.FSDP, None, True, "device"),
])
def test_a_sharded_launch_loads_the_starting_weights_on_the_cpu(kind, zero_stage, quantized, where):
    plugin = None if zero_stage is None else SimpleNamespace(zero_stage=zero_stage)
    accelerator = SimpleNamespace(distributed_type=kind, state=SimpleNamespace(deepspeed_plugin=plugin),
                                  device=torch.device("cuda", 1))
    lora = {"lora": LoraSettings()} if quantized else {}
    cfg = TrainConfig(model="m", data="d.jsonl", load_in_4bit=quantized, **lora)
    assert load_device(accelerator, cfg) == ("cpu" if where == "cpu" else torch.device("cuda", 1))

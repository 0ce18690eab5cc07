"""The memory plan of `train --dry-run`: an 8B-shaped Llama (Llama-3.1-8B's sizes) is built on the
meta device from its config alone, and its per-rank bytes under DDP / ZeRO-2 / FSDP / ZeRO-3 match a
hand computation."""
from __future__ import annotations

import math

import pytest
from transformers import LlamaConfig
from typer.testing import CliRunner

from personalign.cli import app
from personalign.models.lora import LoraSettings
from personalign.train.config import TrainConfig
from personalign.train.footprint import ModelSize, memory_plan, model_size

H, I, LAYERS, HEADS, KV_HEADS, VOCAB = 4096, 14336, 32, 32, 8, 128256


@pytest.fixture(scope="module")
def llama_8b(tmp_path_factory):
    """A directory holding only the config of a Llama-3.1-8B-shaped model (no weights, no tokenizer)."""
    path = tmp_path_factory.mktemp("llama-8b")
    LlamaConfig(hidden_size=H, intermediate_size=I, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                num_key_value_heads=KV_HEADS, vocab_size=VOCAB, tie_word_embeddings=False,
                architectures=["LlamaForCausalLM"]).save_pretrained(path)
    return path


def hand_count() -> tuple[int, int, int]:
    """(all parameters, LoRA r=16 all-linear parameters, one decoder layer's) written out from the architecture."""
    kv = H // HEADS * KV_HEADS
    attention = H * H + H * kv + H * kv + H * H  # q, k, v, o
    mlp = 3 * H * I  # gate, up, down
    layer = attention + mlp + 2 * H  # two RMSNorm weights
    total = VOCAB * H + LAYERS * layer + H + VOCAB * H  # embeddings, layers, final norm, untied head
    linears = [(H, H), (H, kv), (H, kv), (H, H), (H, I), (H, I), (I, H)]
    lora = LAYERS * sum(16 * (a + b) for a, b in linears)
    return total, lora, layer


OUTSIDE = VOCAB * H + H + VOCAB * H  # the root unit: embeddings, final norm, untied head


def test_the_8b_model_is_counted_on_the_meta_device(llama_8b):
    total, lora, layer = hand_count()
    assert total == 8_030_261_248
    full = model_size(TrainConfig(model=str(llama_8b), data="x.jsonl", dtype="bfloat16"))
    assert full == ModelSize(total, total, 2, layer, OUTSIDE)
    adapters = model_size(TrainConfig(model=str(llama_8b), data="x.jsonl", lora=LoraSettings(r=16)))
    assert adapters == ModelSize(total + lora, lora, 4, layer + lora // LAYERS, OUTSIDE)


@pytest.mark.parametrize("strategy, params, grads", [
    ("ddp", lambda n, w: n, lambda n, w: n),
    ("zero2", lambda n, w: n, lambda n, w: math.ceil(n / w)),
    ("fsdp", lambda n, w: math.ceil(n / w), lambda n, w: math.ceil(n / w)),
    ("zero3", lambda n, w: math.ceil(n / w), lambda n, w: math.ceil(n / w)),
])
def test_per_rank_bytes_match_the_hand_computation(strategy, params, grads):
    total, _, _ = hand_count()
    for world in (1, 8, 7):
        plan = memory_plan(ModelSize(total, total, 2), strategy, world)
        assert plan.parameter_bytes == 2 * params(total, world)
        assert plan.gradient_bytes == 2 * grads(total, world)
        assert plan.optimizer_bytes == 2 * 2 * grads(total, world)  # AdamW: two moments in the weights' dtype
        assert plan.total_bytes == plan.parameter_bytes + plan.gradient_bytes + plan.optimizer_bytes
    ddp = memory_plan(ModelSize(total, total, 2), "ddp", 8)
    assert round(ddp.total_bytes / 1024 ** 3, 2) == 59.83  # 8 bytes per parameter in bf16 + bf16 AdamW states


def test_dry_run_prints_the_plan_without_loading_weights_or_data(llama_8b):
    res = CliRunner().invoke(app, ["train", "--dry-run", "--num-processes", "8", f"model={llama_8b}",
                                   "data=does-not-exist.jsonl", "dtype=bfloat16"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "8,030,261,248 parameters" in res.output and "8 processes" in res.output
    rows = {line.split()[1]: line for line in res.output.splitlines() if line.startswith("│")}
    assert "59.83" in rows["ddp"] and "7.48" in rows["fsdp"] and "7.48" in rows["zero3"] and "20.57" in rows["zero2"]
    assert "reference pass" in res.output and "not the whole 14.96 GiB" in res.output
    assert rows["ddp"].split()[-2] == rows["zero2"].split()[-2] == "14.96"  # the whole model, the training copy
    assert rows["fsdp"].split()[-2] == rows["zero3"].split()[-2] == "4.64"  # its shard + root + two layers


def test_the_reference_pass_holds_a_shard_and_what_is_gathered_at_a_time():
    total, _, layer = hand_count()
    size = ModelSize(total, total, 2, layer, OUTSIDE)
    for world in (1, 2, 8):
        assert memory_plan(size, "ddp", world).reference_bytes == 2 * total
        assert memory_plan(size, "zero2", world).reference_bytes == 2 * total
        fsdp = memory_plan(size, "fsdp", world)
        assert fsdp.reference_bytes == 2 * min(total, math.ceil(total / world) + OUTSIDE + 2 * layer)
        assert fsdp.reference_bytes == memory_plan(size, "zero3", world).reference_bytes
    assert memory_plan(size, "fsdp", 1).reference_bytes == 2 * total  # never more than the whole model
    assert memory_plan(size, "fsdp", 8).reference_bytes < 0.32 * 2 * total


def test_a_reference_free_objective_shows_no_reference_pass(llama_8b):
    res = CliRunner().invoke(app, ["train", "--dry-run", f"model={llama_8b}", "data=x.jsonl", "loss=sft"],
                             terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "reference" not in res.output


def test_an_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="strategy"):
        memory_plan(ModelSize(10, 10, 4), "tp", 2)

"""Tests that pin the training objective itself, not just "the loss goes down":

* at step 1 the policy equals the reference, so every DPO loss type takes its closed form
  (sigmoid and label-smoothed sigmoid: ln 2; ipo: 1/(4β²); hinge: 1): a zeroed, swapped or stale
  (cached for other data, view, length or limit) reference breaks it;
* gradient accumulation of 2 × 4 equals one batch of 8;
* gradient checkpointing equals no checkpointing, bf16 autocast stays near fp32;
* the learning rate of every step follows the hand-written schedule formulas.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from personalign.models.loading import load_model
from personalign.records.io import write_jsonl
from personalign.train.config import TrainConfig
from personalign.train.loop import train
from personalign.views.build import ViewConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")
BETA = 0.1
CLOSED_FORM = {  # loss at Δ(chosen) = Δ(rejected) = 0
    ("sigmoid", 0.0): math.log(2),
    ("sigmoid", 0.2): math.log(2),  # -(1-ε) log σ(0) - ε log σ(0)
    ("ipo", 0.0): 1 / (4 * BETA**2),  # (0/β - 1/(2β))²
    ("hinge", 0.0): 1.0,  # max(0, 1 - 0)
}


def records(n: int, tag: str = "") -> list[dict]:
    out = []
    for i in range(n):
        pet, other = ("cats", "dogs") if i % 2 == 0 else ("dogs", "cats")
        out.append({"prompt": f"Any advice {tag}{i}?", "chosen": f"A tip for {pet} people {i}.",
                    "rejected": f"Something else about {other} {tag}.", "Demographic Information": f"Loves {pet}."})
    return out


def run(model_dir, data, out, **kw):
    base = dict(model=str(model_dir), data=str(data), view=ViewConfig(view="demo"), learning_rate=1e-3,
                per_device_train_batch_size=8, max_length=96, logging_steps=1, save_steps=1000, max_steps=1,
                output_dir=str(out), report_to="none")
    return train(TrainConfig(**(base | kw)))


def step_metrics(out) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "train/loss" in r]


@pytest.fixture()
def data(tmp_path):
    path = tmp_path / "pairs.jsonl"
    write_jsonl(records(16), path)
    return path


@pytest.mark.parametrize(("loss_type", "smoothing"), list(CLOSED_FORM))
def test_step_one_dpo_loss_is_the_closed_form(tiny_model_dir, data, tmp_path, loss_type, smoothing):
    result = run(tiny_model_dir, data, tmp_path / "run", loss_type=loss_type, label_smoothing=smoothing, beta=BETA)
    assert result.train_metrics["train/loss"] == pytest.approx(CLOSED_FORM[loss_type, smoothing], rel=1e-4, abs=1e-4)


def test_step_one_loss_stays_ln2_when_any_input_of_the_reference_cache_key_changes(tiny_model_dir, data, tmp_path):
    """A stale reference (cached for other data, view, max_length or limit) makes Δ ≠ 0 at step 1."""
    run(tiny_model_dir, data, tmp_path / "a")
    write_jsonl(records(16, tag="changed "), data)  # same path, new content
    changes = [{}, {"view": ViewConfig(view="none")}, {"max_length": 40}, {"limit": 12},
               {"view": ViewConfig(view="demo", persona_source="rejected")}]
    cache = data.parent / ".personalign-cache"
    for i, change in enumerate(changes):
        result = run(tiny_model_dir, data, tmp_path / f"b{i}", **change)
        assert result.train_metrics["train/loss"] == pytest.approx(math.log(2), abs=1e-4), change
        assert len(list(cache.glob("tokens-*/logprobs-*.safetensors"))) == i + 2, change  # a new entry for each input
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    try:  # bf16 autocast scores differ slightly: they get their own entry too
        run(tiny_model_dir, data, tmp_path / "bf16", bf16=True)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert len(list(cache.glob("tokens-*/logprobs-*.safetensors"))) == len(changes) + 2
    other_model = tmp_path / "other-model"
    from personalign.testing import save_tiny

    save_tiny(other_model, seed=3)
    result = run(other_model, data, tmp_path / "c")
    assert result.train_metrics["train/loss"] == pytest.approx(math.log(2), abs=1e-4)


def _weights(run_dir) -> dict[str, torch.Tensor]:
    model, _ = load_model(run_dir / "final")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_gradient_accumulation_matches_the_larger_batch(tiny_model_dir, data, tmp_path):
    one = run(tiny_model_dir, data, tmp_path / "one", per_device_train_batch_size=8, max_steps=2)
    two = run(tiny_model_dir, data, tmp_path / "two", per_device_train_batch_size=4, gradient_accumulation_steps=2,
              max_steps=2)
    assert [r["train/loss"] for r in step_metrics(tmp_path / "one")] == pytest.approx(
        [r["train/loss"] for r in step_metrics(tmp_path / "two")], abs=1e-5)
    start, _ = load_model(tiny_model_dir)
    a, b = _weights(one.output_dir), _weights(two.output_dir)
    moved = 0
    for name, w in a.items():
        torch.testing.assert_close(w, b[name], atol=1e-5, rtol=1e-4)
        moved += not torch.equal(w, start.state_dict()[name])
    assert moved > 0


def test_gradient_checkpointing_and_bf16_against_the_plain_fp32_run(tiny_model_dir, data, tmp_path):
    plain = run(tiny_model_dir, data, tmp_path / "plain", max_steps=2)
    ckpt = run(tiny_model_dir, data, tmp_path / "ckpt", max_steps=2, gradient_checkpointing=True)
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # the mixed-precision setting is per process
    try:
        bf16 = run(tiny_model_dir, data, tmp_path / "bf16", max_steps=2, bf16=True)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    losses = {name: [r["train/loss"] for r in step_metrics(tmp_path / name)] for name in ("plain", "ckpt", "bf16")}
    assert losses["ckpt"] == pytest.approx(losses["plain"], abs=1e-5)  # recomputation changes nothing
    assert losses["bf16"] == pytest.approx(losses["plain"], abs=2e-2)  # autocast: bf16 matmuls, fp32 master weights
    w_plain, w_ckpt = _weights(plain.output_dir), _weights(ckpt.output_dir)
    for name, w in w_plain.items():
        torch.testing.assert_close(w, w_ckpt[name], atol=1e-5, rtol=1e-4)
    assert all(v.dtype == torch.float32 for v in _weights(bf16.output_dir).values())


def _hand_lr(kind: str, step: int, total: int, warmup: int, lr: float, min_rate: float) -> float:
    """The learning rate used at optimizer step `step` (0-based), from the schedules' formulas."""
    if step < warmup:
        return lr * step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    if kind == "linear":
        return lr * max(0.0, 1 - progress)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return lr * cosine if kind == "cosine" else lr * (min_rate + (1 - min_rate) * cosine)


@pytest.mark.parametrize("kind", ["linear", "cosine", "cosine_with_min_lr"])
def test_learning_rate_schedules_follow_their_formulas(tiny_model_dir, data, tmp_path, kind):
    total, lr = 6, 1e-3
    run(tiny_model_dir, data, tmp_path / kind, max_steps=total, per_device_train_batch_size=2, learning_rate=lr,
        lr_scheduler_type=kind, warmup_ratio=0.34, min_lr_rate=0.1)
    warmup = math.ceil(0.34 * total)
    logged = [r["train/learning_rate"] for r in step_metrics(tmp_path / kind)]
    assert logged == pytest.approx([_hand_lr(kind, s, total, warmup, lr, 0.1) for s in range(total)], rel=1e-6,
                                   abs=1e-12)


def test_each_epoch_uses_its_own_seeded_order(tiny_model_dir, data, tmp_path, monkeypatch):
    """The loop wires epoch_order(seed + epoch): epoch 2 is not a replay of epoch 1."""
    from personalign.train import loop

    seen: list[list[tuple[int, ...]]] = []
    real = loop.collate
    monkeypatch.setattr(loop, "collate", lambda store, idx, ref=None: seen.append(
        [tuple(t.prompt_ids) for t in store.examples(idx)]) or real(store, idx, ref))
    run(tiny_model_dir, data, tmp_path / "epochs", per_device_train_batch_size=8, num_train_epochs=2, max_steps=-1,
        seed=7)
    assert len(seen) == 4  # 16 records, batch 8: 2 steps per epoch
    first, second = seen[0] + seen[1], seen[2] + seen[3]
    assert sorted(first) == sorted(second) and first != second
    n = 16
    order0, order1 = loop.epoch_order(n, 7, 0).tolist(), loop.epoch_order(n, 7, 1).tolist()
    assert order0 != order1


def test_eval_accuracy_is_the_margin_over_the_starting_model(tiny_model_dir, data, tmp_path):
    """After one small step the policy is close to the reference, so the reference term decides most pairs."""
    from personalign.models.scorer import score_responses
    from personalign.records.io import read_examples
    from personalign.views.build import render_views

    long_chosen = tmp_path / "long.jsonl"  # the base model prefers the short rejected reply: raw accuracy ~0
    write_jsonl([{**r, "chosen": f"A long, careful and detailed tip for people number {i}, with all the reasons.",
                  "rejected": "No."} for i, r in enumerate(records(16))], long_chosen)
    result = run(tiny_model_dir, long_chosen, tmp_path / "eval", eval_data=str(long_chosen), learning_rate=1e-3,
                 eval_steps=1)
    start, tok = load_model(tiny_model_dir)
    trained, _ = load_model(result.final_dir)
    items = [(r.prompt, r.responses) for r in render_views(read_examples(long_chosen), ViewConfig(view="demo"), tok)]
    before = score_responses(start, tok, items, max_length=96, progress=False)
    after = score_responses(trained, tok, items, max_length=96, progress=False)
    margins = [(a.logp[0] - a.logp[1]) - (b.logp[0] - b.logp[1]) for a, b in zip(after, before)]
    raw = sum(a.logp[0] > a.logp[1] for a in after) / len(after)
    expected = sum(m > 0 for m in margins) / len(margins)
    assert result.eval_metrics["eval/accuracy"] == pytest.approx(expected, abs=1 / 16)  # a near-tie may flip
    assert abs(expected - raw) >= 0.25  # the reference term decides: raw log-prob accuracy would differ


def test_gradient_clipping_bounds_the_update(tiny_model_dir, data, tmp_path):
    """With adam_epsilon = lr ≫ |g| the first AdamW step moves the weights by lr·g/(|g| + eps) ≈ g, so
    clipping g to norm c bounds the update's norm by c; without clipping it is the full gradient norm
    (logged as grad_norm)."""
    step = dict(max_steps=1, learning_rate=100.0, adam_epsilon=100.0, weight_decay=0.0)
    clipped = run(tiny_model_dir, data, tmp_path / "clip", max_grad_norm=1e-3, **step)
    free = run(tiny_model_dir, data, tmp_path / "free", max_grad_norm=None, **step)
    start, _ = load_model(tiny_model_dir)
    s = dict(start.named_parameters())  # tied embeddings counted once

    def moved(result) -> float:
        trained, _ = load_model(result.final_dir)
        return math.sqrt(sum(float(((p - s[k]) ** 2).sum()) for k, p in trained.named_parameters()))

    grad_norm = clipped.train_metrics["train/grad_norm"]
    assert grad_norm > 1e-2  # the unclipped gradient is much larger than the clip
    assert moved(clipped) <= 1.05e-3
    assert moved(free) == pytest.approx(grad_norm, rel=0.05)

"""One optimizer step against TRL's own trainers on the same batch: `personalign train` with loss dpo
(sigmoid) against `trl.DPOTrainer`, and loss rm against `trl.RewardTrainer`, in the loss and in
every updated weight.

Both sides start from the same saved model, see the same 4 records as one batch (TRL gets the
prompt our `none` view renders under the tokenizer's chat template, so the texts are equal; the
token ids are checked equal below), and share every optimizer setting. AdamW's first step is
lr·m/(√v + eps) = lr·g/(|g| + eps); with lr = 1 and eps = 1 the update is ≈ g for small gradients, so
the weights compare the gradients themselves, not only their signs. Tolerances: the loss to 1e-5 and
the weights to 1e-5 absolute: both sides run fp32 on CPU, and the only difference is our packed
batch (shared prompt, block-diagonal attention) against TRL's padded one, which changes the
order of float sums (seen: ≤ 2e-7 on the loss, ≤ 3e-7 on a weight).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from personalign.records.io import read_examples, write_jsonl
from personalign.train.config import TrainConfig
from personalign.train.loop import train
from personalign.views.build import ViewConfig, build_view

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

STEP = dict(per_device_train_batch_size=4, max_steps=1, learning_rate=1.0, adam_epsilon=1.0, weight_decay=0.0,
            lr_scheduler_type="constant", seed=0)


def records() -> list[dict]:
    return [{"prompt": f"Question {i}: how should I spend my evening?", "chosen": f"Read a good book, friend {i}.",
             "rejected": "Whatever." if i % 2 else "Watch something loud."} for i in range(4)]


def ours(model_dir: Path, tmp_path: Path, loss: str) -> tuple[float, dict[str, torch.Tensor]]:
    result = train(TrainConfig(model=str(model_dir), data=str(tmp_path / "pairs.jsonl"), view=ViewConfig(view="none"),
                               loss=loss, loss_type=["sigmoid"], beta=0.1, max_grad_norm=None, max_length=256,
                               logging_steps=1, report_to="none", output_dir=str(tmp_path / "ours"), **STEP))
    logged = [json.loads(line) for line in (result.output_dir / "metrics.jsonl").read_text().splitlines()]
    return next(r["train/loss"] for r in logged if "train/loss" in r), load_file(str(result.final_dir / "model.safetensors"))


def trl_rows(tok, tmp_path: Path) -> list[dict]:
    """The records (written for our side too) for TRL: our rendered prompt as plain text, the responses as they are."""
    write_jsonl(records(), tmp_path / "pairs.jsonl")
    view = ViewConfig(view="none")
    return [{"prompt": build_view(ex, view, tok, i).prompt, "chosen": ex.responses[0], "rejected": ex.responses[1]}
            for i, ex in enumerate(read_examples(tmp_path / "pairs.jsonl"))]


def trl_args(cls, tmp_path: Path, **extra):
    return cls(output_dir=str(tmp_path / "trl"), max_grad_norm=0.0, bf16=False, use_cpu=True, report_to="none",
               logging_steps=1, save_strategy="no", gradient_checkpointing=False, dataloader_num_workers=0,
               max_length=256, **STEP, **extra)


def hand_ids(tok, prompt: str, response: str) -> list[int]:
    return tok(prompt)["input_ids"] + tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def compare(trained: torch.nn.Module, saved: dict[str, torch.Tensor], start: dict[str, torch.Tensor]) -> None:
    theirs = {k: v.detach() for k, v in trained.state_dict().items()}
    moved = [k for k in saved if (saved[k] - start[k]).abs().max().item() > 1e-3]
    assert len(moved) >= len(saved) // 2, "one step moved most weights"
    for name, value in saved.items():
        torch.testing.assert_close(value, theirs[name], atol=1e-5, rtol=0, msg=name)


def test_one_dpo_step_matches_trl_dpo_trainer(tiny_model_dir, tmp_path, one_torch_thread):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = trl_rows(tok, tmp_path)
    trainer = trl.DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                             args=trl_args(trl.DPOConfig, tmp_path, beta=0.1, loss_type=["sigmoid"]),
                             train_dataset=datasets.Dataset.from_list(rows), processing_class=tok)
    for row, tokenized in zip(rows, trainer.train_dataset):  # the same token ids on both sides
        for side in ("chosen", "rejected"):
            assert tokenized["prompt_ids"] + tokenized[f"{side}_ids"] == hand_ids(tok, row["prompt"], row[side])
    trainer.train()
    their_loss = trainer.state.log_history[0]["loss"]

    our_loss, saved = ours(tiny_model_dir, tmp_path, "dpo")
    assert our_loss == pytest.approx(their_loss, abs=1e-5)
    start = load_file(str(tiny_model_dir / "model.safetensors"))
    compare(trainer.model, saved, start)


def test_one_reward_model_step_matches_trl_reward_trainer(tiny_model_dir, tmp_path, one_torch_thread):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)  # the score head starts random: save it once, both sides load that model
    start_dir = tmp_path / "rm-start"
    head = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    head.config.pad_token_id = AutoTokenizer.from_pretrained(tiny_model_dir).pad_token_id
    head.save_pretrained(start_dir, safe_serialization=True)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.save_pretrained(start_dir)

    rows = trl_rows(tok, tmp_path)
    trainer = trl.RewardTrainer(model=AutoModelForSequenceClassification.from_pretrained(start_dir, num_labels=1),
                                args=trl_args(trl.RewardConfig, tmp_path),
                                train_dataset=datasets.Dataset.from_list(rows), processing_class=tok)
    for row, tokenized in zip(rows, trainer.train_dataset):
        for side in ("chosen", "rejected"):
            assert tokenized[f"{side}_ids"] == hand_ids(tok, row["prompt"], row[side])
    trainer.train()
    their_loss = trainer.state.log_history[0]["loss"]

    our_loss, saved = ours(start_dir, tmp_path, "rm")
    assert our_loss == pytest.approx(their_loss, abs=1e-5)
    compare(trainer.model, saved, load_file(str(start_dir / "model.safetensors")))

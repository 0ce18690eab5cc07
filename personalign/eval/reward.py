"""Reward scoring (docs/formats.md, "Evaluation run files"): mean σ(score) of a sequence-classification reward model, and BLEU.

Each file is read as records (.jsonl/.json/.parquet, e.g. a run's generations.jsonl); a row's
text is (prompt field, response field) rendered through the reward model's chat template as a
user turn and an assistant turn (or "prompt\\n\\nresponse" without one). The reward of a row is
σ(logit) of the model's single output (a reward model trained by personalign is scored as it was
trained: the prompt through its template, the reward at the response's EOS); per file and over all files the mean (all files: weighted
by file size, i.e. the mean over all rows) with a bootstrap 95% interval. With a reference field,
BLEU of the responses against it is sacrebleu's corpus BLEU, per file and over all rows.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import PositiveInt

from personalign.config import StrictModel
from personalign.files import check_output_file, write_json
from personalign.metrics import Estimate, bootstrap
from personalign.models.card import read_provenance
from personalign.models.loading import check_model_dir
from personalign.models.rewards import load_reward_model
from personalign.records.dialogue import dialogue_messages
from personalign.records.errors import RecordError
from personalign.records.io import check_source, iter_raw
from personalign.records.tokens import CONVENTIONS, Convention, prompts_ids

PathLike = str | os.PathLike
REWARD_METRIC = {"personalign": "mean sigmoid(score)", "scaling-alignment": "mean raw score (logit)"}
BLEU_METRIC = {"personalign": "sacrebleu corpus BLEU (0-100)",
               "scaling-alignment": "mean nltk sentence_bleu over characters (0-1)"}
SCALING_ALIGNMENT_MAX_TOKENS = 1024


@dataclass(slots=True)
class RewardScores:
    """Rewards (σ of the score) of one file or of all files, with BLEU when a reference was given."""

    name: str
    n: int
    reward: Estimate
    bleu: float | None
    convention: str = "personalign"

    def as_dict(self) -> dict:
        return {"name": self.name, "n": self.n, "reward": self.reward.as_dict(), "bleu": self.bleu,
                "convention": self.convention, "reward_metric": REWARD_METRIC[self.convention],
                "bleu_metric": BLEU_METRIC[self.convention]}


class RewardConfig(StrictModel):
    """`personalign eval reward` settings."""

    files: list[str]
    model: str  # a sequence-classification model directory with one label
    prompt_field: str = "prompt"
    response_field: str = "response"
    reference_field: str | None = None  # BLEU against this field
    batch_size: PositiveInt = 8
    max_length: PositiveInt = 2048
    n_boot: PositiveInt = 1000
    convention: Convention = "personalign"
    out: str | None = None  # the reward JSON `personalign report` reads


def reward_text(tokenizer, prompt: str, response: str) -> str:
    """The text a reward model scores: a user/assistant chat, or prompt and response on their own."""
    if getattr(tokenizer, "chat_template", None):
        chat = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        return tokenizer.apply_chat_template(chat, tokenize=False)
    return f"{prompt}\n\n{response}"


def oasst_text(tokenizer, prompt: str, response: str) -> str:
    """ScalingAlignment's reward-model input (`eval_hh/metrics.py`): OpenAssistant turns
    `<|prompter|>…` / `<|assistant|>…`, each followed by the tokenizer's EOS token."""
    turns = dialogue_messages(prompt) or [{"role": "user", "content": prompt}]
    tags = {"user": "<|prompter|>", "assistant": "<|assistant|>"}
    parts = [tags[t["role"]] + t["content"] for t in turns] + [tags["assistant"] + response]
    return "".join(p + (tokenizer.eos_token or "") for p in parts)


def seed_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """ScalingAlignment's BLEU: nltk `sentence_bleu([ref], hyp)` on the stripped strings (so over
    characters, 4-gram, no smoothing), averaged over rows."""
    from nltk.translate.bleu_score import sentence_bleu

    scores = [sentence_bleu([r.strip()], h.strip()) for h, r in zip(hypotheses, references)]
    return float(np.mean(scores)) if scores else float("nan")


def reward_scores(model, tokenizer, texts: Sequence[str], *, batch_size: int = 8, max_length: int = 2048,
                  convention: str = "personalign") -> np.ndarray:
    """Raw scores (logits) of `texts`, in order; batches of similar length, right-padded.

    personalign: BOS per the tokenizer's convention, texts cut at the right to `max_length`.
    scaling-alignment: the tokenizer's default special tokens, cut at the left to 1024 tokens (the seed's
    `truncation_side = "left"`)."""
    if convention == "scaling-alignment":
        enc = [ids[-SCALING_ALIGNMENT_MAX_TOKENS:] for ids in tokenizer(list(texts))["input_ids"]]
    else:
        enc = [ids[:max_length] for ids in prompts_ids(tokenizer, texts)]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    scores = np.empty(len(enc), dtype=np.float64)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = tokenizer.pad({"input_ids": [enc[i] for i in idx]}, return_tensors="pt", padding_side="right")
        with torch.inference_mode():
            logits = model(input_ids=batch["input_ids"].to(model.device),
                           attention_mask=batch["attention_mask"].to(model.device)).logits
        scores[idx] = logits[:, 0].float().cpu().numpy()
    return scores


def _trained_template(model_dir: PathLike) -> str | None:
    """The prompt template of a reward model trained by personalign (`loss: rm`), else None."""
    info = read_provenance(model_dir) or {}
    view = info.get("view")
    return view.get("template") if info.get("loss") == "rm" and isinstance(view, dict) else None


def trained_reward_scores(model, tokenizer, template: str, rows: Sequence[tuple[str, ...]], *,
                          max_length: int = 2048) -> np.ndarray:
    """Rewards of (prompt, response) rows from a reward model personalign trained, scored as it was
    trained: the prompt through its template (view none: a row carries no user context), the response
    with EOS, the reward at the response's last token (`ResponseRewards`)."""
    from personalign.models.rewards import ResponseRewards
    from personalign.models.scorer import InMemoryRows, score_store
    from personalign.records.tokens import tokenize_pair
    from personalign.views.templates import build_prompt

    items = [tokenize_pair(tokenizer, build_prompt(template, "none", r[0], tokenizer=tokenizer).text, [r[1]], max_length)
             for r in rows]
    table = score_store(ResponseRewards(model), InMemoryRows(items), progress=False)
    return table.logps[:, 0].double().numpy()


def read_fields(path: PathLike, fields: Sequence[str]) -> list[tuple[str, ...]]:
    """`fields` of every record of a file, as strings; a missing or non-string field is an error naming its line."""
    rows = []
    for rec in iter_raw(path):
        value = rec.value
        if isinstance(value, RecordError):
            raise value
        for name in fields:
            if not isinstance(value.get(name), str):
                raise RecordError(rec.file, rec.line, name, "missing, or not a string")
        rows.append(tuple(value[name] for name in fields))
    return rows


def score_files(
    model_dir: PathLike,
    files: Sequence[PathLike],
    *,
    prompt_field: str = "prompt",
    response_field: str = "response",
    reference_field: str | None = None,
    batch_size: int = 8,
    max_length: int = 2048,
    n_boot: int = 1000,
    convention: str = "personalign",
) -> tuple[list[RewardScores], RewardScores]:
    """Per-file reward (and BLEU) results, and the result over all files together.

    convention personalign: mean σ(score) of the chat-rendered text, sacrebleu corpus BLEU.
    scaling-alignment: ScalingAlignment's `eval_hh` conventions: OpenAssistant-format text
    (`oasst_text`), left-truncated at 1024 tokens, mean raw score, BLEU as `seed_bleu`.
    """
    import sacrebleu

    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
    seed = convention == "scaling-alignment"

    def bleu_of(hyps: list[str], refs: list[str]) -> float:
        return seed_bleu(hyps, refs) if seed else sacrebleu.corpus_bleu(hyps, [refs]).score

    model, tokenizer = load_reward_model(model_dir)
    tokenizer.padding_side = "right"
    trained = _trained_template(model_dir)
    fields = [prompt_field, response_field] + ([reference_field] if reference_field else [])
    per_file, all_rewards, all_hyps, all_refs = [], [], [], []
    for path in files:
        rows = read_fields(path, fields)
        if not rows:
            raise ValueError(f"{path}: no records")
        if trained is not None and not seed:
            scores = trained_reward_scores(model, tokenizer, trained, rows, max_length=max_length)
        else:
            render = oasst_text if seed else reward_text
            texts = [render(tokenizer, r[0], r[1]) for r in rows]
            scores = reward_scores(model, tokenizer, texts, batch_size=batch_size, max_length=max_length,
                                   convention=convention)
        rewards = scores if seed else 1 / (1 + np.exp(-scores))
        hyps, refs = [r[1] for r in rows], [r[2] for r in rows] if reference_field else []
        bleu = bleu_of(hyps, refs) if reference_field else None
        per_file.append(RewardScores(os.fspath(path), len(rows), bootstrap(rewards, n_boot=n_boot), bleu,
                                     convention))
        all_rewards.append(rewards)
        all_hyps += hyps
        all_refs += refs
    overall_bleu = bleu_of(all_hyps, all_refs) if reference_field else None
    rewards = np.concatenate(all_rewards)
    return per_file, RewardScores("all", len(rewards), bootstrap(rewards, n_boot=n_boot), overall_bleu, convention)


def evaluate_reward(cfg: RewardConfig) -> tuple[list[RewardScores], RewardScores]:
    """`eval reward`: the files, the reward model and the output file checked before the model loads,
    then `score_files`."""
    for f in cfg.files:
        check_source(f, option="FILES")
    check_model_dir(cfg.model, option="--model", kind="seq-cls")
    if cfg.out is not None:
        check_output_file(cfg.out, inputs=cfg.files)
    return score_files(cfg.model, cfg.files, prompt_field=cfg.prompt_field, response_field=cfg.response_field,
                       reference_field=cfg.reference_field, batch_size=cfg.batch_size, max_length=cfg.max_length,
                       n_boot=cfg.n_boot, convention=cfg.convention)


def write_reward(out: PathLike, model_dir: PathLike, reference_field: str | None, per_file: Sequence[RewardScores],
                 overall: RewardScores) -> Path:
    """Write the reward JSON `personalign report` reads."""
    doc = {"kind": "reward", "model": os.fspath(model_dir), "reference_field": reference_field,
           "files": [r.as_dict() for r in per_file], "all": overall.as_dict()}
    return write_json(out, doc)

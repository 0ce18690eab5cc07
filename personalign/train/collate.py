"""Training data: records -> rendered views -> token ids (once, before training) -> packed batches.

A `TrainItem` holds one example's token ids (prompt and responses, best first), its reference
log-probs when the objective needs them, and its rewards. `collate` packs a list of items into
one `TrainBatch`: every example is ONE sequence prompt ‖ r1 ‖ … ‖ rk (`pack_batch`), so the
responses of a pair or a ranking of any length share a single prompt pass.
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from personalign.data.io import ReadCounts, read_examples
from personalign.data.views import ViewConfig, ViewCounts, render_views
from personalign.errors import EmptyError
from personalign.models.logprobs import PackedBatch, Tokenized, pack_batch, tokenize_pair


@dataclass(frozen=True, slots=True)
class TrainItem:
    """One tokenized example; `ref_logps` and `rewards` align with `tokens.response_ids`."""

    tokens: Tokenized
    ref_logps: tuple[float, ...] | None = None
    rewards: tuple[float, ...] | None = None


@dataclass(frozen=True, slots=True)
class TrainBatch:
    """A packed batch plus `[B, R]` reference log-probs and rewards (None when absent; padding 0)."""

    packed: PackedBatch
    ref_logps: torch.Tensor | None
    rewards: torch.Tensor | None

    def to(self, device: torch.device | str) -> TrainBatch:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return TrainBatch(self.packed.to(device), move(self.ref_logps), move(self.rewards))


def load_items(
    source: str | os.PathLike,
    view: ViewConfig,
    tokenizer: PreTrainedTokenizerBase,
    *,
    loss: str,
    max_length: int | None,
    limit: int | None = None,
    best_only: bool = False,
) -> tuple[list[TrainItem], dict[str, int]]:
    """Read, render and tokenize the first `limit` records of `source` (all when None).

    DPO needs exactly two responses per record and PRO at least two. `best_only` keeps just the
    best response (SFT training). The view renders with `max_length` unless it sets its own, so
    history is dropped to fit instead of cut by the tokenizer. Returns the items and counts.
    """
    if view.max_length is None and max_length is not None:
        view = view.model_copy(update={"max_length": max_length})
    read, rendered = ReadCounts(), ViewCounts()
    examples = itertools.islice(read_examples(source, counts=read), limit)
    items = []
    for r in render_views(examples, view, tokenizer):
        n = len(r.responses)
        if (loss == "dpo" and n != 2) or (loss == "pro" and n < 2):
            need = "exactly 2 responses (a pair)" if loss == "dpo" else "at least 2 responses (a ranking)"
            raise ValueError(f"{r.source}: loss {loss!r} needs {need}, got {n}")
        responses = r.responses[:1] if best_only else r.responses
        rewards = tuple(r.rewards[: len(responses)]) if r.rewards is not None else None
        items.append(TrainItem(tokenize_pair(tokenizer, r.prompt, responses, max_length), rewards=rewards))
        rendered.add(r)
    if not items:
        raise EmptyError("no records to train on", file=source)
    if max_length is not None and all(it.tokens.response_cut for it in items):
        raise EmptyError(f"every one of the {len(items)} records is too long for max_length={max_length}: its "
                         "responses would be cut even after dropping history and cutting the prompt; raise "
                         "max_length", file=source)
    counts = {"records": len(items), "truncated_for_length": sum(it.tokens.truncated for it in items),
              **{f"view_{k}": v for k, v in rendered.summary().items() if k != "records"}}
    return items, counts


def collate(items: Sequence[TrainItem]) -> TrainBatch:
    """Pack `items` into one batch; reference log-probs and rewards are kept when every item has them."""
    packed = pack_batch([it.tokens for it in items])
    return TrainBatch(packed, *targets(items, packed.num_responses))


def targets(items: Sequence[TrainItem], width: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """`[N, width]` reference log-probs and rewards of `items` (padding 0), each None when absent."""
    return (_per_response([it.ref_logps for it in items], width, "reference log-probs"),
            _per_response([it.rewards for it in items], width, "rewards"))


def _per_response(values: list[tuple[float, ...] | None], width: int, what: str) -> torch.Tensor | None:
    present = [v is not None for v in values]
    if not any(present):
        return None
    if not all(present):
        raise ValueError(f"{what} are given for some examples of a batch but not for others")
    out = torch.zeros(len(values), width, dtype=torch.float32)
    for row, v in enumerate(values):
        out[row, : len(v)] = torch.tensor(v, dtype=torch.float32)
    return out

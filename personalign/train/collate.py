"""Training data: records -> token store (rendered and tokenized once, on disk) -> packed batches.

`personalign.tokenstore.store.load_store` builds (or finds) the token store of a training or eval file. `collate` reads the
rows of one micro-batch from it and packs them into one `TrainBatch`: every example is ONE
sequence prompt ‖ r1 ‖ … ‖ rk (`pack_batch`), so the responses of a pair or a ranking of any
length share a single prompt pass. Reference log-probs come as an `[N, R]` table beside the store.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from personalign.models.logprobs import PackedBatch, pack_batch
from personalign.records.io import OnInvalid
from personalign.records.tokens import Tokenized
from personalign.tokenstore.store import StoreSpec, TokenStore
from personalign.train.config import TrainConfig
from personalign.views.build import ViewConfig

NEEDS = {"dpo": "pair", "kto": "kto", "simpo": "pair", "orpo": "pair", "pro": "ranking", "rm": "ranking",
         "sft": "any"}


@dataclass(frozen=True, slots=True)
class TrainBatch:
    """A packed batch plus `[B, R]` reference log-probs and rewards (None when absent; padding 0), and
    `[B]` sft indices (PRO's SFT response per row; None when no row names one)."""

    packed: PackedBatch
    ref_logps: torch.Tensor | None
    rewards: torch.Tensor | None
    sft_index: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> TrainBatch:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return TrainBatch(self.packed.to(device), move(self.ref_logps), move(self.rewards), move(self.sft_index))


def store_spec(view: ViewConfig, *, loss: str, max_length: int | None, limit: int | None = None,
               on_invalid: OnInvalid = "fail") -> StoreSpec:
    """What a training (or eval) store of `loss` holds: DPO needs exactly two responses per record,
    PRO at least two; SFT keeps only the best response."""
    return StoreSpec(view, max_length, responses="best" if loss == "sft" else "all", need=NEEDS[loss], limit=limit,
                     on_invalid=on_invalid)


def run_specs(cfg: TrainConfig) -> list[tuple[str, StoreSpec]]:
    """The (data, store spec) pairs a training run reads: its training data, and its eval data (all
    history, no sampling) when it has one. `personalign data tokenize` builds exactly these."""
    specs = [(cfg.data, store_spec(cfg.view, loss=cfg.loss, max_length=cfg.max_length, limit=cfg.limit,
                                   on_invalid=cfg.on_invalid))]
    if cfg.eval_data is not None:
        eval_view = cfg.view.model_copy(update={"sample_history": False})
        specs.append((cfg.eval_data, store_spec(eval_view, loss=cfg.loss, max_length=cfg.max_length,
                                                on_invalid=cfg.on_invalid)))
    return specs


class KtoRows:
    """A KTO store (pairs, and single completions with their own label) with one response more per
    row for the KL estimate: row i also scores the first response of row i − 1 (wrapping around), a
    mismatched (prompt, response) pair as TRL's KTOTrainer builds them. Fixed per row, so the
    reference pass scores them once with the rest.

    KTO's `rewards` are its labels, 1 desirable and 0 undesirable: by position for pairs and rankings
    (the first response, best for the view's user, desirable; the others not), the record's own label
    for an unpaired completion. Stored rewards are never read, so their scale, and their negation under
    a rejected-side persona, cannot flip a label."""

    suffix = "+kto-kl"  # part of the reference cache key: these tables have one response more

    def __init__(self, store: TokenStore):
        self.store, self.path = store, store.path
        self._n_responses = store.num_responses

    def __len__(self) -> int:
        return len(self.store)

    @property
    def width(self) -> int:
        return self.store.width + 1

    @property
    def num_responses(self) -> np.ndarray:
        return self.store.num_responses + 1

    @property
    def packed_lengths(self) -> np.ndarray:
        return self.store.packed_lengths + np.roll(self.store.first_response_lengths, 1)

    def partners(self, indices: Sequence[int]) -> list[int]:
        return [(i - 1) % len(self.store) for i in indices]

    def examples(self, indices: Sequence[int]) -> list[Tokenized]:
        own = self.store.examples(indices)
        others = self.store.examples(self.partners(indices))
        return [Tokenized(ex.prompt_ids, [*ex.response_ids, other.response_ids[0]], ex.prompt_cut, ex.response_cut)
                for ex, other in zip(own, others)]

    def rewards(self, indices: Sequence[int]) -> list[list[float]]:
        n = self._n_responses[np.asarray(indices, dtype=np.int64)]
        return [[float(label)] if label is not None else [1.0] + [0.0] * (int(k) - 1)
                for label, k in zip(self.store.labels(indices), n)]


def collate(store: TokenStore | KtoRows, indices: Sequence[int], ref: torch.Tensor | None = None) -> TrainBatch:
    """Pack rows `indices` of `store` into one batch, with their reference log-probs (rows of `ref`)
    and rewards when the records carry them."""
    packed = pack_batch(store.examples(indices))
    width = packed.num_responses
    ref_logps = None if ref is None else ref[torch.as_tensor(list(indices), dtype=torch.long), :width].float()
    return TrainBatch(packed, ref_logps, rewards_tensor(store.rewards(indices), width), sft_tensor(store, indices))


def sft_tensor(store: TokenStore | KtoRows, indices: Sequence[int]) -> torch.Tensor | None:
    """`[N]` rows' sft indices (0, the best response, where a row names none); None when none names one."""
    found = store.sft_indices(indices) if hasattr(store, "sft_indices") else [None]
    if all(i is None for i in found):
        return None
    return torch.tensor([0 if i is None else i for i in found], dtype=torch.long)


def rewards_tensor(values: list[list[float] | None], width: int) -> torch.Tensor | None:
    """`[N, width]` rewards (padding 0), None when no row has them."""
    present = [v is not None for v in values]
    if not any(present):
        return None
    if not all(present):
        raise ValueError("rewards are given for some examples of a batch but not for others")
    out = torch.zeros(len(values), width, dtype=torch.float32)
    for row, v in enumerate(values):
        out[row, : len(v)] = torch.tensor(v, dtype=torch.float32)
    return out

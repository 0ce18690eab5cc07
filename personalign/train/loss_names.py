"""The names of the training objectives and DPO loss types, and the checks on them: what configs and
the CLI need without the loss math (`train/losses.py`), so that reading a config imports no torch."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

# TRL 1.16's DPOTrainer loss types; "aot_pair" is the name older TRL gave "aot_unpaired".
DpoLossType = Literal["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                      "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm", "aot_pair"]
LOSS_TYPE_ALIASES = {"aot_pair": "aot_unpaired"}
DPO_LOSS_TYPES = tuple(t for t in get_args(DpoLossType) if t not in LOSS_TYPE_ALIASES)
SMOOTHED = ("sigmoid", "robust", "exo_pair", "aot", "aot_unpaired")  # the loss types label_smoothing applies to
REFERENCE_FREE = frozenset({"sft", "pro", "simpo", "orpo", "rm"})  # objectives that never score a reference
LENGTH_NORMALIZED = ("ipo", "sigmoid_norm", "sft")  # the loss types that need the token counts


def dpo_loss_types(loss_type: str | Sequence[str]) -> tuple[str, ...]:
    """`loss_type` as a tuple of canonical TRL names (aliases resolved); ValueError on an unknown one."""
    names = (loss_type,) if isinstance(loss_type, str) else tuple(loss_type)
    names = tuple(LOSS_TYPE_ALIASES.get(n, n) for n in names)
    unknown = [n for n in names if n not in DPO_LOSS_TYPES]
    if unknown or not names:
        raise ValueError(f"unknown DPO loss_type {unknown or names!r}; expected one of {DPO_LOSS_TYPES}")
    return names


def dpo_loss_check(loss_type: str | Sequence[str], loss_weights: Sequence[float] | None, label_smoothing: float
                   ) -> tuple[tuple[str, ...], list[float]]:
    """(canonical loss types, their weights) of a DPO setting; ValueError on an inconsistent one."""
    kinds = dpo_loss_types(loss_type)
    weights = list(loss_weights) if loss_weights is not None else [1.0] * len(kinds)
    if len(weights) != len(kinds):
        raise ValueError(f"loss_weights has {len(weights)} weights for {len(kinds)} loss types")
    if label_smoothing and not set(kinds) <= set(SMOOTHED):
        raise ValueError(f"label_smoothing applies to loss_type in {SMOOTHED} only, not {kinds}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5), got {label_smoothing}")
    if "exo_pair" in kinds and not label_smoothing:
        raise ValueError("loss_type 'exo_pair' needs label_smoothing > 0 (its ε; the EXO paper uses 1e-3)")
    return kinds, weights

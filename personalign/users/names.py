"""The user-model stage's vocabulary: the representations' names, importable without torch (CLI help)."""
from __future__ import annotations

from typing import Literal, get_args

Representation = Literal["bt", "mean-diff", "lowrank", "mixture", "embedding", "latent"]
REPRESENTATIONS: tuple[str, ...] = get_args(Representation)

"""The user-model protocol (docs/user-models.md): users' pairs as padded tensors, states from shots, test
margins, and accuracy with a bootstrap interval over users (per slice where users have slices).

Accuracy is the share of test pairs with r_u(y_w) > r_u(y_l); a tie (equal rewards, e.g. `mean-diff`
with no shots) counts one half. The interval resamples users, each keeping all its test pairs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from personalign.metrics import SLICES, Estimate
from personalign.users.population import Population, UserPairs
from personalign.users.representations import UserModel, UserTexts


def padded(pop: Population, users: list[UserPairs], idx: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """φ(y_w), φ(y_l) [U, P, d] and mask [U, P] of each user's pairs `idx[u]`."""
    width = max((len(i) for i in idx), default=0)
    chosen = np.zeros((len(users), width, pop.dim), np.float32)
    rejected = np.zeros_like(chosen)
    mask = np.zeros((len(users), width), bool)
    for u, (user, rows) in enumerate(zip(users, idx)):
        if rows:
            c, r = pop.pair_features(user, rows)
            chosen[u, :len(rows)], rejected[u, :len(rows)], mask[u, :len(rows)] = c, r, True
    return torch.from_numpy(chosen), torch.from_numpy(rejected), torch.from_numpy(mask)


def user_texts(pop: Population, users: list[UserPairs]) -> UserTexts:
    """The users' own texts as padded features [U, T, d], kinds [U, T] and mask [U, T]."""
    width = max((len(u.texts) for u in users), default=0)
    feats = np.zeros((len(users), width, pop.dim), np.float32)
    kinds = np.zeros((len(users), width), np.int64)
    mask = np.zeros((len(users), width), bool)
    for i, user in enumerate(users):
        n = len(user.texts)
        if n:
            feats[i, :n], kinds[i, :n], mask[i, :n] = pop.text_features(user), user.text_kinds, True
    return UserTexts(torch.from_numpy(feats), torch.from_numpy(kinds), torch.from_numpy(mask))


def pair_scores(margins: torch.Tensor) -> np.ndarray:
    """1 for r(y_w) > r(y_l), ½ for a tie, 0 otherwise."""
    m = margins.detach().double().numpy()
    return np.where(m > 0, 1.0, np.where(m == 0, 0.5, 0.0))


def user_bootstrap(correct: np.ndarray, totals: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
                   level: float = 0.95) -> Estimate:
    """Σ correct / Σ pairs over users, with a percentile interval from resampling users."""
    n = correct.size
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    boots = correct[idx].sum(1) / totals[idx].sum(1)
    tail = (1 - level) / 2
    low, high = np.quantile(boots, [tail, 1 - tail])
    return Estimate(float(correct.sum() / totals.sum()), float(low), float(high), int(n))


@dataclass
class ShotResult:
    """Accuracy at one number of shots: overall and per slice, users scored and skipped, per-user rows."""

    shots: int
    overall: Estimate
    slices: dict[str, Estimate] = field(default_factory=dict)
    skipped: int = 0
    pairs: int = 0
    per_user: list[tuple[str, float, int]] = field(default_factory=list)  # (user, correct, test pairs)

    def as_dict(self) -> dict:
        return {"shots": self.shots, "accuracy": self.overall.value, "ci": [self.overall.low, self.overall.high],
                "n": self.overall.n, "pairs": self.pairs, "skipped": self.skipped,
                "slices": {k: v.as_dict() for k, v in self.slices.items()}}


def score_users(model: UserModel, pop: Population, users: list[UserPairs], shots: list[list[int]],
                tests: list[list[int]], batch: int = 1024) -> list[np.ndarray]:
    """Per user, the pair scores (1, ½, 0) of its test pairs under the state fitted on its shots."""
    out: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(users), batch):
            sl = slice(start, start + batch)
            c, r, m = padded(pop, users[sl], shots[sl])
            with torch.enable_grad():
                state = model.adapt(c, r, m, user_texts(pop, users[sl])).detach()
            tc, tr, tm = padded(pop, users[sl], tests[sl])
            scores = pair_scores(model.margin(state, tc, tr))
            out += [scores[u][tm[u].numpy()] for u in range(len(scores))]
    return out


def evaluate_shots(model: UserModel, pop: Population, shots: int, *, n_boot: int = 1000, seed: int = 0) -> ShotResult:
    """Accuracy of `model` on `pop`'s users with `shots` shots each (users without enough pairs are skipped and counted)."""
    users, shot_idx, test_idx = [], [], []
    for user in pop.users:
        split = user.split(shots)
        if split is not None:
            users.append(user)
            shot_idx.append(split[0])
            test_idx.append(split[1])
    skipped = len(pop.users) - len(users)
    if not users:
        return ShotResult(shots, Estimate(float("nan"), float("nan"), float("nan"), 0), skipped=skipped)
    scores = score_users(model, pop, users, shot_idx, test_idx)
    correct = np.array([s.sum() for s in scores])
    totals = np.array([s.size for s in scores], dtype=np.float64)
    slices = np.array([u.slice for u in users])
    by_slice = {name: user_bootstrap(correct[slices == name], totals[slices == name], n_boot=n_boot, seed=seed)
                for name in SLICES if (slices == name).any()}
    return ShotResult(shots, user_bootstrap(correct, totals, n_boot=n_boot, seed=seed), by_slice, skipped,
                      int(totals.sum()), [(u.user, float(c), int(t)) for u, c, t in zip(users, correct, totals)])

"""Pure metric functions shared by every stage (it sits below them): alignment accuracy, bootstrap
intervals, paired differences, per-slice summaries, judge win rates."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

SLICES = ("ugc", "pairs", "demographic", "all", "none", "mixed")


@dataclass(frozen=True, slots=True)
class Estimate:
    """A proportion with its bootstrap 95% interval."""

    value: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict:
        return asdict(self)


def pair_correct(
    policy_chosen: np.ndarray,
    policy_rejected: np.ndarray,
    ref_chosen: np.ndarray | None = None,
    ref_rejected: np.ndarray | None = None,
) -> np.ndarray:
    """AlignX alignment accuracy per pair: Δ(y_w) > Δ(y_l) with Δ = logp_π − logp_ref.

    Without reference log-probs this is raw log-prob accuracy: logp(y_w) > logp(y_l).
    """
    margin = np.asarray(policy_chosen, dtype=np.float64) - np.asarray(policy_rejected, dtype=np.float64)
    if ref_chosen is not None and ref_rejected is not None:
        margin = margin - (np.asarray(ref_chosen, dtype=np.float64) - np.asarray(ref_rejected, dtype=np.float64))
    return margin > 0


def best_ahead(scores, worst, ref=None, *, n_tokens=None) -> np.ndarray:
    """The one "is the best response ahead?" rule (training's `eval/accuracy`, `eval accuracy`, `eval rm`).

    Per row of `scores` `[N, R]` (responses best first): column 0 against column `worst[i]` (an index per
    row, or one for all rows), by the margin over the reference `ref` `[N, R]` where given (`pair_correct`:
    AlignX alignment accuracy), else by the score itself (a reward, or a summed log-prob), per token
    when `n_tokens` `[N, R]` is given (mean token log-prob, in the scores' own precision).
    """
    s = np.asarray(scores)
    rows, worst = np.arange(len(s)), np.broadcast_to(np.asarray(worst), (len(s),))
    if n_tokens is not None:
        s = s / np.maximum(np.asarray(n_tokens), 1).astype(s.dtype)
    if ref is None:
        return pair_correct(s[:, 0], s[rows, worst])
    r = np.asarray(ref)
    return pair_correct(s[:, 0], s[rows, worst], r[:, 0], r[rows, worst])


def bootstrap(values: Sequence[float] | np.ndarray, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> Estimate:
    """Mean of `values` with a percentile bootstrap interval (deterministic for a seed)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, 100):
        stop = min(start + 100, n_boot)
        idx = rng.integers(0, x.size, size=(stop - start, x.size))
        means[start:stop] = x[idx].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return Estimate(float(x.mean()), float(low), float(high), int(x.size))


def paired_difference(after: Sequence[float] | np.ndarray, before: Sequence[float] | np.ndarray, *,
                      n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> Estimate:
    """Mean of after − before over the same records, with a paired percentile bootstrap interval
    (records are resampled, each keeping both of its values)."""
    a, b = np.asarray(after, dtype=np.float64), np.asarray(before, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in number: {a.size} after, {b.size} before")
    return bootstrap(a - b, n_boot=n_boot, seed=seed, level=level)


def sliced_accuracy(correct: Sequence[bool] | np.ndarray, slices: Sequence[str], *, n_boot: int = 1000, seed: int = 0
                    ) -> dict[str, Estimate]:
    """Accuracy overall and per conditioning slice, each with a bootstrap interval."""
    c = np.asarray(correct, dtype=np.float64)
    s = np.asarray(slices)
    if c.shape != s.shape:
        raise ValueError(f"{c.size} verdicts but {s.size} slice labels")
    out = {"overall": bootstrap(c, n_boot=n_boot, seed=seed)}
    for name in SLICES:
        mask = s == name
        if mask.any():
            out[name] = bootstrap(c[mask], n_boot=n_boot, seed=seed)
    return out


def _win_rate(o: np.ndarray, judged: np.ndarray, idx: np.ndarray | slice = slice(None)) -> np.ndarray:
    """wins / (wins + losses) over the judged pairs that `idx` picks (each row of `idx` one resample);
    NaN where no pair is decisive."""
    o, judged = o[idx], judged[idx]
    wins, losses = ((o == 1) & judged).sum(-1), ((o == -1) & judged).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return wins / (wins + losses)


def _interval(point: float, samples: np.ndarray, n: int, level: float) -> Estimate:
    samples = samples[~np.isnan(samples)]
    if n == 0 or samples.size == 0:
        return Estimate(point, math.nan, math.nan, n)
    tail = (1 - level) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    return Estimate(point, float(low), float(high), n)


def bootstrap_win_rates(
    outcomes: dict[str, np.ndarray], *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[dict[str, Estimate], Estimate | None]:
    """Win rate per rubric and ΔPQ with percentile intervals, resampling pairs.

    `outcomes[rubric]` holds +1/0/−1 per pair, or NaN where that pair was not judged under that
    rubric. One set of resampled pair indices serves every rubric; ΔPQ counts the pairs judged
    under both rubrics.
    """
    n = len(next(iter(outcomes.values()))) if outcomes else 0
    idx = np.random.default_rng(seed).integers(0, max(n, 1), size=(n_boot, n))
    judged = {r: ~np.isnan(o) for r, o in outcomes.items()}
    estimates = {
        r: _interval(float(_win_rate(o, judged[r])), _win_rate(o, judged[r], idx), int(judged[r].sum()), level)
        for r, o in outcomes.items()
    }
    if not {"quality", "personalization"} <= outcomes.keys():
        return estimates, None
    both = judged["quality"] & judged["personalization"]
    q, p = outcomes["quality"], outcomes["personalization"]
    point = float(_win_rate(p, both) + _win_rate(q, both) - 1)
    samples = _win_rate(p, both, idx) + _win_rate(q, both, idx) - 1
    return estimates, _interval(point, samples, int(both.sum()), level)

"""The PBA profile rule (docs/formats.md, "PBA profile"): averaged preference directions -> preference phrases.

Direction values are in {0, 0.5, 1}; sums of such values are exact in binary floating point, so
each dimension's sum doubled is an exact integer h (half-units) and the mean is compared to the
thresholds in integer arithmetic: with n vectors, mean = h / 2n, so mean >= 0.6 <=> 5h >= 6n and
mean <= 0.4 <=> 5h <= 4n.
Means of exactly 0.4 and 0.6 therefore land on the side the rule names, with no float drift.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from personalign.records.dimensions import Dimension, load_dimensions
from personalign.records.schema import Comment, Pair, UserContext


@lru_cache(maxsize=256)
def _value_of_sum(n: int) -> dict[float, float]:
    """For n vectors: column sum (a multiple of 0.5) -> 1 / 0 / 0.5, in exact half-unit arithmetic."""
    table = {}
    for h in range(2 * n + 1):
        table[h / 2] = 1.0 if 5 * h >= 6 * n else 0.0 if 5 * h <= 4 * n else 0.5
    return table


def profile_values(directions: Sequence[Sequence[float]]) -> list[float] | None:
    """Map the mean of the direction vectors to 1 / 0 / 0.5 per dimension; None without vectors.

    Mean >= 0.6 -> 1, mean <= 0.4 -> 0, else 0.5. If no dimension becomes 0 or 1, with M the
    largest and m the smallest mean: if 1 - M < m every dimension at M becomes 1, otherwise every
    dimension at m becomes 0 (the rest stay 0.5). Values must be 0, 0.5 or 1 (records are
    validated when read); a column sum that no such values can give raises ValueError.
    """
    if not directions:
        return None
    width = len(directions[0])
    if any(len(v) != width for v in directions):
        raise ValueError("preference direction vectors differ in length")
    n = len(directions)
    sums = list(map(sum, zip(*directions)))
    try:
        values = list(map(_value_of_sum(n).__getitem__, sums))
    except KeyError:
        bad = next(x for v in directions for x in v if x not in (0, 0.5, 1))
        raise ValueError(f"preference direction values must be 0, 0.5 or 1, got {bad!r}") from None
    if 0.0 in values or 1.0 in values:
        return values
    top, low = max(sums), min(sums)
    if n - top < low:  # 1 - M < m, both sides scaled by n (sums are exact multiples of 0.5)
        return [1.0 if h == top else 0.5 for h in sums]
    return [0.0 if h == low else 0.5 for h in sums]


def profile_text(values: Sequence[float], dims: Sequence[Dimension]) -> str:
    """Positive phrase for 1, negative phrase for 0, in index order, joined by ", "."""
    if len(values) != len(dims):
        raise ValueError(f"profile has {len(values)} values but the dimension table has {len(dims)}")
    phrases = [d.positive if v == 1 else d.negative for v, d in zip(values, dims) if v != 0.5]
    return ", ".join(phrases)


def user_profile(
    user: UserContext, items_used: Sequence[Comment | Pair], dims: Sequence[Dimension] | None = None
) -> str | None:
    """The user's PBA profile text, or None when it cannot be formed.

    A ready `profile` string wins; otherwise the rule runs on the direction vectors of the history
    items used. The record's own top-level direction vector is never used: it describes the very
    pair being predicted, so a profile built from it would leak the label (docs/formats.md, "PBA profile"). `dims`
    defaults to the table found by `load_dimensions()`.
    """
    if user.profile:
        return user.profile
    vectors = [it.direction for it in items_used if it.direction is not None]
    values = profile_values(vectors)
    if values is None:
        return None
    return profile_text(values, dims if dims is not None else load_dimensions())

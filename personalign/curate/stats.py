"""Streaming dataset statistics: lengths, history sizes, user signals, slices, dimension usage.

Memory is constant in the number of records: lengths are integers, so each length field keeps an
exact histogram (a Counter of length -> records) and percentiles are exact, by nearest rank (the
p-th percentile is the smallest length L with at least ceil(p/100 * n) records of length <= L).
Token lengths count tokens without special tokens, tokenizing in batches of `batch_size` records.
For ranking records, "chosen" is the best response and "rejected" the worst.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from personalign.records.dimensions import Dimension, load_dimensions
from personalign.records.schema import N_DIMENSIONS, Example

LENGTH_FIELDS = ("prompt", "chosen", "rejected")
PERCENTILES = (5, 50, 95)


@dataclass(frozen=True, slots=True)
class LengthStats:
    p5: int
    p50: int
    p95: int
    max: int
    mean: float


@dataclass(frozen=True, slots=True)
class DimensionUsage:
    """How many records' own direction vectors put dimension `index` at 1 and at 0."""

    index: int
    positive: str
    negative: str
    ones: int
    zeros: int

    @property
    def used(self) -> int:
        return self.ones + self.zeros


@dataclass
class DataStats:
    records: int = 0
    responses: dict[int, int] = field(default_factory=dict)  # responses per record -> records
    with_rewards: int = 0
    chars: dict[str, LengthStats] = field(default_factory=dict)
    tokens: dict[str, LengthStats] | None = None
    ugc_per_record: dict[int, int] = field(default_factory=dict)
    pairs_per_record: dict[int, int] = field(default_factory=dict)
    with_demographic: int = 0
    with_direction: int = 0
    with_profile: int = 0
    with_personas: int = 0
    slices: dict[str, int] = field(default_factory=dict)
    dimensions: list[DimensionUsage] = field(default_factory=list)  # used dimensions, most used first

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for d, usage in zip(out["dimensions"], self.dimensions):
            d["used"] = usage.used
        return out


def percentiles(hist: Counter) -> LengthStats:
    """Exact nearest-rank p5/p50/p95, max and mean of a histogram {length: count}."""
    n = sum(hist.values())
    if n == 0:
        return LengthStats(0, 0, 0, 0, 0.0)
    ranks = [max(1, -(-p * n // 100)) for p in PERCENTILES]  # ceil(p/100 * n) in integers
    out, seen, i = [], 0, 0
    for length in sorted(hist):
        seen += hist[length]
        while i < len(ranks) and seen >= ranks[i]:
            out.append(length)
            i += 1
    mean = sum(length * c for length, c in hist.items()) / n
    return LengthStats(*out, max(hist), round(mean, 2))


class _TokenCounter:
    """Buffers texts and tokenizes them in batches, adding token lengths to histograms."""

    def __init__(self, tokenizer: Any, batch_size: int):
        self.tok, self.batch_size = tokenizer, batch_size
        self.buf: dict[str, list[str]] = {f: [] for f in LENGTH_FIELDS}
        self.hist: dict[str, Counter] = {f: Counter() for f in LENGTH_FIELDS}

    def add(self, texts: Sequence[str]) -> None:
        for f, t in zip(LENGTH_FIELDS, texts):
            self.buf[f].append(t)
        if len(self.buf["prompt"]) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        n = len(self.buf["prompt"])
        if not n:
            return
        flat = [t for f in LENGTH_FIELDS for t in self.buf[f]]
        ids = self.tok(flat, add_special_tokens=False)["input_ids"]
        for k, f in enumerate(LENGTH_FIELDS):
            self.hist[f].update(len(x) for x in ids[k * n : (k + 1) * n])
            self.buf[f].clear()


def compute_stats(
    examples: Iterable[Example],
    tokenizer: Any = None,
    *,
    dimensions: Sequence[Dimension] | None = None,
    batch_size: int = 1000,
) -> DataStats:
    """One pass over `examples`. `tokenizer` (any callable returning {"input_ids": [...]} for a list
    of texts, e.g. a HF tokenizer) adds token lengths. `dimensions` names the dimensions (default:
    `load_dimensions()` when the table can be found; otherwise dimensions are reported unnamed)."""
    s = DataStats()
    chars = {f: Counter() for f in LENGTH_FIELDS}
    responses, ugc, pairs, slices = Counter(), Counter(), Counter(), Counter()
    ones, zeros = [0] * N_DIMENSIONS, [0] * N_DIMENSIONS
    tokens = _TokenCounter(tokenizer, batch_size) if tokenizer is not None else None
    for ex in examples:
        s.records += 1
        texts = (ex.prompt, ex.responses[0], ex.responses[-1])
        for f, t in zip(LENGTH_FIELDS, texts):
            chars[f][len(t)] += 1
        if tokens is not None:
            tokens.add(texts)
        responses[len(ex.responses)] += 1
        s.with_rewards += ex.rewards is not None
        u = ex.user
        ugc[len(u.ugc)] += 1
        pairs[len(u.pairs)] += 1
        slices[u.slice] += 1
        s.with_demographic += bool(u.demographic)
        s.with_profile += bool(u.profile)
        s.with_personas += bool(u.personas)
        if u.direction is not None:
            s.with_direction += 1
            for i, v in enumerate(u.direction):
                if v != 0.5:
                    if v == 1:
                        ones[i] += 1
                    else:
                        zeros[i] += 1
    s.chars = {f: percentiles(h) for f, h in chars.items()}
    if tokens is not None:
        tokens.flush()
        s.tokens = {f: percentiles(h) for f, h in tokens.hist.items()}
    s.responses, s.ugc_per_record, s.pairs_per_record = (dict(sorted(c.items())) for c in (responses, ugc, pairs))
    s.slices = dict(slices.most_common())
    if s.with_direction:
        dims = dimensions
        if dims is None:
            try:
                dims = load_dimensions()
            except FileNotFoundError:
                dims = None
        names = [(d.positive, d.negative) for d in dims] if dims is not None else [("", "")] * N_DIMENSIONS
        usage = [DimensionUsage(i, *names[i], ones[i], zeros[i]) for i in range(N_DIMENSIONS) if ones[i] or zeros[i]]
        s.dimensions = sorted(usage, key=lambda d: (-d.used, d.index))
    return s

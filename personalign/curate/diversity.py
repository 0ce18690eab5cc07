"""Prompt diversity (docs/fidelity.md, "Scaling data diversity"): the bigram measure D, its semantic variant, and a greedy selector.

For N tokenized prompts, D = √N · (#distinct token bigrams) / (#token bigrams), bigrams taken
within each prompt and counted over the whole set. A bigram (a, b) is the one int64 a·V + b
(V = largest token id + 1), so counting is one `np.sort` over one array (`np.unique` without
return arguments hashes, which is many times slower when most values are distinct).

Semantic variant: the mean pairwise cosine distance 1 − mean_{i≠j} cos(e_i, e_j) of sentence
embeddings, from the identity Σ_{i≠j} e_i·e_j = ‖Σ e_i‖² − Σ ‖e_i‖² for unit rows: exact, O(N·d),
no N×N matrix.

Greedy selection (`select_diverse`): start empty; at each step add the prompt that maximises D of
the grown set. All candidates at a step give a set of the same size, so √N is common and the
step maximises (U + new_c) / (T + len_c), where U, T are the selected set's distinct and total
bigram counts, new_c the candidate's distinct bigrams not yet covered and len_c its bigram count.
Plain lazy greedy (one heap of stale gains) is not valid for this ratio: which of two candidates
is better depends on U and T, not only on their gains, so the heap order goes stale even where
no gain changed. It is valid within candidates of equal len_c, whose order is the order of
new_c, and new_c only shrinks as the set grows (a stale new_c is an upper bound). So candidates
are grouped by len_c, each group is a lazy max-heap on new_c, and each step visits groups in
order of their upper bound (U + stale top new_c) / (T + len_c), refreshing tops until no
remaining group's bound can beat the best exact score. The result is exactly the plain greedy
(exact integer comparisons; ties go to the earlier prompt in a seeded random order).
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from personalign.files import write_json
from personalign.records.tokens import CONVENTIONS, prompts_ids


@dataclass(frozen=True, slots=True)
class Bigrams:
    """Every within-prompt token bigram as one int64 code, prompt after prompt: prompt i's codes
    are `codes[offsets[i]:offsets[i + 1]]`."""

    codes: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def from_token_ids(cls, token_ids: Sequence[Sequence[int]]) -> Bigrams:
        lengths = np.fromiter(map(len, token_ids), dtype=np.int64, count=len(token_ids))
        flat = np.fromiter(chain.from_iterable(token_ids), dtype=np.int64, count=int(lengths.sum()))
        if flat.size and flat.min() < 0:
            raise ValueError("token ids must be non-negative")
        vocab = int(flat.max()) + 1 if flat.size else 1
        codes = flat[:-1] * vocab + flat[1:]
        last = np.cumsum(lengths)[lengths > 0] - 1  # a pair starting at a prompt's last token straddles two prompts
        codes = np.delete(codes, last[last < codes.size])
        offsets = np.concatenate([[0], np.cumsum(np.maximum(lengths - 1, 0))])
        return cls(codes, offsets)

    def gather(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """The codes of the prompts at `indices`, in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        starts = self.offsets[idx]
        lens = self.offsets[idx + 1] - starts
        shift = np.repeat(starts - (np.cumsum(lens) - lens), lens)
        return np.arange(int(lens.sum()), dtype=np.int64) + shift


@dataclass(frozen=True, slots=True)
class Diversity:
    """Bigram diversity of a set of `n` prompts."""

    n: int
    distinct: int
    total: int

    @property
    def d(self) -> float:
        """√n · distinct / total (0 when the set has no bigram)."""
        return math.sqrt(self.n) * self.distinct / self.total if self.total else 0.0


def _as_bigrams(token_ids: Sequence[Sequence[int]] | Bigrams) -> Bigrams:
    return token_ids if isinstance(token_ids, Bigrams) else Bigrams.from_token_ids(token_ids)


def diversity(token_ids: Sequence[Sequence[int]] | Bigrams, indices: Sequence[int] | None = None) -> Diversity:
    """D of all prompts, or of the prompts at `indices`."""
    b = _as_bigrams(token_ids)
    if indices is None:
        return Diversity(len(b), _unique(b.codes).size, int(b.codes.size))
    codes = b.codes[b.gather(indices)]
    return Diversity(len(indices), _unique(codes).size, int(codes.size))


def diversity_curve(
    token_ids: Sequence[Sequence[int]] | Bigrams, sizes: Sequence[int], seed: int = 0
) -> list[Diversity]:
    """D of nested prefixes (one per size) of the shuffle `np.random.default_rng(seed).permutation(N)`,
    in one pass."""
    b = _as_bigrams(token_ids)
    n = len(b)
    if any(s < 1 or s > n for s in sizes):
        raise ValueError(f"sizes must be between 1 and {n} (the number of prompts), got {list(sizes)}")
    order = np.random.default_rng(seed).permutation(n)
    codes = b.codes[b.gather(order)]
    lens = b.lengths[order]
    rank = np.repeat(np.arange(n), lens)  # position in the shuffle of each bigram's prompt
    _, first = np.unique(codes, return_index=True)
    first_rank = np.sort(rank[first])  # per distinct bigram, the prefix length - 1 that first holds it
    totals = np.concatenate([[0], np.cumsum(lens)])
    return [Diversity(s, int(np.searchsorted(first_rank, s)), int(totals[s])) for s in sizes]


def random_diversity(
    token_ids: Sequence[Sequence[int]] | Bigrams, size: int, draws: int = 20, seed: int = 0
) -> list[Diversity]:
    """D of `draws` seeded uniform random subsets of `size` prompts."""
    b = _as_bigrams(token_ids)
    rng = np.random.default_rng(seed)
    return [diversity(b, rng.choice(len(b), size, replace=False)) for _ in range(draws)]


def select_diverse(token_ids: Sequence[Sequence[int]] | Bigrams, k: int, seed: int = 0) -> list[int]:
    """Indices of `k` prompts picked greedily to maximise D, in the order picked (module docstring).

    `seed` orders ties: among equally good candidates the first in
    `np.random.default_rng(seed).permutation(N)` wins.
    """
    b = _as_bigrams(token_ids)
    n = len(b)
    if not 0 <= k <= n:
        raise ValueError(f"cannot select {k} of {n} prompts")
    tie = np.empty(n, dtype=np.int64)
    tie[np.random.default_rng(seed).permutation(n)] = np.arange(n)
    distinct, n_bigrams = _distinct_per_prompt(b)
    lens = b.lengths.tolist()
    groups: dict[int, list[tuple[int, int, int]]] = {}
    for i, (ids, r) in enumerate(zip(distinct, tie.tolist())):
        groups.setdefault(lens[i], []).append((-len(ids), r, i))
    for heap in groups.values():
        heapq.heapify(heap)
    covered = bytearray(n_bigrams)
    fresh_at = [-1] * n
    u = t = 0
    picked: list[int] = []
    for step in range(k):
        bounds = sorted(((_ratio(u - heap[0][0], t + length), length) for length, heap in groups.items()), reverse=True)
        best = None  # (numerator, denominator, tie rank, index, length, new bigrams)
        for bound, length in bounds:
            if best is not None and bound < best[0] / best[1]:
                break
            heap = groups[length]
            while fresh_at[heap[0][2]] != step:
                i = heap[0][2]
                ids = distinct[i]
                heapq.heapreplace(heap, (sum(map(covered.__getitem__, ids)) - len(ids), heap[0][1], i))
                fresh_at[i] = step
            neg_new, r, i = heap[0]
            num, den = (u - neg_new, t + length) if t + length else (0, 1)
            if best is None or num * best[1] > best[0] * den or (num * best[1] == best[0] * den and r < best[2]):
                best = (num, den, r, i, length, -neg_new)
        _, _, _, i, length, new = best
        heap = groups[length]
        heapq.heappop(heap)
        if not heap:
            del groups[length]
        for c in distinct[i]:
            covered[c] = 1
        u, t = u + new, t + length
        picked.append(i)
    return picked


def _unique(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sort-based)."""
    s = np.sort(a)
    return s[np.concatenate(([True], s[1:] != s[:-1]))] if s.size else s


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def _distinct_per_prompt(b: Bigrams) -> tuple[list[list[int]], int]:
    """Per prompt, its distinct bigrams as dense ids 0..M-1; and M, the distinct bigrams in all."""
    if not b.codes.size:
        return [[] for _ in range(len(b))], 0
    _, dense = np.unique(b.codes, return_inverse=True)
    m = int(dense.max()) + 1
    prompt = np.repeat(np.arange(len(b), dtype=np.int64), b.lengths)
    keys = _unique(prompt * m + dense)
    counts = np.bincount(keys // m, minlength=len(b))
    ids = (keys % m).tolist()
    bounds = np.concatenate([[0], np.cumsum(counts)]).tolist()
    return [ids[bounds[i]:bounds[i + 1]] for i in range(len(b))], m


# ---------------------------------------------------------------------------------------- text side


SCALING_ALIGNMENT_MAX_TOKENS = 512


def tokenize(prompts: Sequence[str], tokenizer: Any, batch_size: int = 2048,
             convention: str = "personalign") -> list[list[int]]:
    """Token ids of each prompt, in batches through a (fast) HF tokenizer.

    personalign (default): BOS where the tokenizer's convention adds one (`prompt_ids`), no other
    special tokens, no truncation. scaling-alignment: as ScalingAlignment's
    `data_preprocess/diversity.py` does, ``tokenizer.encode(prompt, truncation=True,
    max_length=512)``: every special token the tokenizer adds by default, prompts cut at 512 tokens.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
    out: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        batch = list(prompts[start:start + batch_size])
        if convention == "scaling-alignment":
            out += tokenizer(batch, truncation=True, max_length=SCALING_ALIGNMENT_MAX_TOKENS)["input_ids"]
        else:
            out += prompts_ids(tokenizer, batch)
    return out


def mean_cosine_distance(embeddings: np.ndarray) -> float:
    """1 − the mean cosine similarity over all ordered pairs i ≠ j of rows (rows normalised here)."""
    e = np.asarray(embeddings, dtype=np.float64)
    n = len(e)
    if n < 2:
        raise ValueError(f"the mean pairwise distance needs at least 2 embeddings, got {n}")
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    if not np.all(norms > 0):
        raise ValueError("an embedding is the zero vector: its cosine similarity is undefined")
    e = e / norms
    s = e.sum(axis=0)
    return float(1.0 - (s @ s - np.einsum("ij,ij->", e, e)) / (n * (n - 1)))


DIVERSITY_METRIC = "D = sqrt(N) * distinct / total token bigrams"


def diversity_doc(curves: dict[str, list[Diversity]], convention: str) -> dict:
    """The diversity JSON `personalign report` reads: `{"kind": "diversity", "metric", "convention",
    "curves": {name: [{"n", "d"}, ...]}}`."""
    return {"kind": "diversity", "metric": DIVERSITY_METRIC, "convention": convention,
            "curves": {name: [{"n": p.n, "d": p.d} for p in points] for name, points in curves.items()}}


def write_diversity(path: str | Path, curves: dict[str, list[Diversity]], convention: str) -> Path:
    """Write `diversity_doc` as JSON (atomically) to `path`."""
    return write_json(path, diversity_doc(curves, convention))

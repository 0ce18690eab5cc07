"""Benchmark: prompt diversity D and greedy diverse selection vs plain-Python baselines.

Prompts: `--n` synthetic prompts, varied beyond the synthetic question bank: each is a
`synth_ranking` question (30% of them multi-turn dialogues), with probability 0.6 prefixed by a
sentence from another record's best response, with probability 0.3 followed by a length or
audience constraint carrying a random number. Tokenized once with the embedded model's tokenizer
(batched; timed for context only). Then, on the same token ids:

* D: ours (`Bigrams.from_token_ids` + `diversity`: int64 bigram codes, `np.unique`) against a
  plain Python set of (a, b) tuples (`seen.update(zip(ids, ids[1:]))`); the counts are asserted
  equal. Best of `--repeat` runs each.
* Selection, equal size: ours (`select_diverse`, exact lazy greedy) against the naive greedy that,
  at every step, recomputes D from scratch (a fresh set of tuples of the selected prompts plus
  the candidate, exact Fractions) for every candidate, on the first `--naive-n` prompts picking
  `--naive-k`; the two selections are asserted identical.
* Selection, full size: ours picks `--select` of all `--n` prompts; the plain incremental greedy
  (one covered set, every candidate rescored with a set difference at every step, no laziness)
  runs `--scan-steps` steps on the same data and its per-step time is multiplied by `--select`
  to estimate its full time (an extrapolation; its steps get no cheaper as the set grows).

Times are CPU seconds of this process (`time.process_time`, steadier than wall time on a shared
machine); wall seconds are printed too. Usage:
    PERSONALIGN_HOME=.cache/personalign-test .venv/bin/python bench/diversity.py [--n 100000] [--select 10000]
The last line reads `ratio=<baseline / ours CPU time for D on n prompts> select_equal_ratio=<naive /
ours at naive-n> select_extrapolated_ratio=<incremental greedy estimate / ours at n> ...`.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from personalign.curate.diversity import Bigrams, diversity, random_diversity, select_diverse, tokenize  # noqa: E402
from personalign.curate.synth import synth_ranking  # noqa: E402

CONSTRAINTS = ("Please answer in under {n} words.", "I have about {n} minutes for this.",
               "Explain it as if I were {n} years old.", "Give me {n} options if you can.")


def make_prompts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    records = list(synth_ranking(n, k=4, seed=seed))
    sentences = sorted({s.strip().rstrip(".") + "." for r in records[:5000] for s in r["responses"][0].split(". ")})
    prompts = []
    for r in records:
        p = r["prompt"]
        if rng.random() < 0.6:
            p = f"{rng.choice(sentences)} {p}"
        if rng.random() < 0.3:
            p = f"{p} {rng.choice(CONSTRAINTS).format(n=rng.randint(2, 500))}"
        prompts.append(p)
    return prompts


def timed(fn, *args, repeat: int = 1):
    """(result, best CPU seconds, best wall seconds)."""
    best_cpu = best_wall = float("inf")
    for _ in range(repeat):
        c, w = time.process_time(), time.perf_counter()
        result = fn(*args)
        best_cpu, best_wall = min(best_cpu, time.process_time() - c), min(best_wall, time.perf_counter() - w)
    return result, best_cpu, best_wall


def ours_d(token_ids: list[list[int]]) -> tuple[int, int]:
    d = diversity(Bigrams.from_token_ids(token_ids))
    return d.distinct, d.total


def baseline_d(token_ids: list[list[int]]) -> tuple[int, int]:
    seen: set[tuple[int, int]] = set()
    total = 0
    for ids in token_ids:
        seen.update(zip(ids, ids[1:]))
        total += max(len(ids) - 1, 0)
    return len(seen), total


def naive_greedy(token_ids: list[list[int]], k: int, seed: int) -> list[int]:
    """Recompute D of (selected + candidate) from scratch for every candidate at every step; ties
    to the earliest prompt in the same seeded permutation as `select_diverse`."""
    rank = {int(p): r for r, p in enumerate(np.random.default_rng(seed).permutation(len(token_ids)))}
    picked: list[int] = []
    for _ in range(k):
        best, best_key = -1, None
        for c in range(len(token_ids)):
            if c in picked:
                continue
            seen, total = set(), 0
            for i in (*picked, c):
                ids = token_ids[i]
                seen.update(zip(ids, ids[1:]))
                total += max(len(ids) - 1, 0)
            key = (Fraction(len(seen), total) if total else Fraction(0), -rank[c])
            if best_key is None or key > best_key:
                best, best_key = c, key
        picked.append(best)
    return picked


def incremental_greedy_steps(sets: list[set], lens: list[int], steps: int) -> list[int]:
    """The plain greedy with one covered set: every step rescores every candidate (`sets`: each
    prompt's bigram tuples, `lens`: its bigram count; built beforehand, untimed)."""
    covered: set[tuple[int, int]] = set()
    total, picked, left = 0, [], set(range(len(sets)))
    for _ in range(steps):
        u = len(covered)
        best = max(left, key=lambda c: ((u + len(sets[c] - covered)) / (total + lens[c]) if total + lens[c] else 0.0, -c))
        picked.append(best)
        left.discard(best)
        covered |= sets[best]
        total += lens[best]
    return picked


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--select", type=int, default=10_000)
    ap.add_argument("--naive-n", type=int, default=1000)
    ap.add_argument("--naive-k", type=int, default=40)
    ap.add_argument("--scan-steps", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from personalign.models.loading import load_tokenizer

    prompts = make_prompts(args.n, args.seed)
    tok = load_tokenizer(None)
    ids, tok_cpu, tok_wall = timed(tokenize, prompts, tok)
    print(f"{args.n} prompts ({len(set(prompts))} distinct), {sum(map(len, ids))} tokens; "
          f"batched tokenization {tok_wall:.1f} s wall", flush=True)

    (ours, d_cpu, d_wall) = timed(ours_d, ids, repeat=args.repeat)
    (base, b_cpu, b_wall) = timed(baseline_d, ids, repeat=args.repeat)
    assert ours == base, (ours, base)
    d = diversity(ids)
    print(f"D on {args.n}: distinct {d.distinct}, total {d.total}, D {d.d:.4f} | ours {d_cpu:.3f} s CPU "
          f"({d_wall:.3f} wall), set-of-tuples {b_cpu:.3f} s CPU ({b_wall:.3f} wall): x{b_cpu / d_cpu:.1f}", flush=True)

    small = ids[:args.naive_n]
    sel_small, s_cpu, _ = timed(select_diverse, small, args.naive_k, args.seed)
    naive_sel, n_cpu, n_wall = timed(naive_greedy, small, args.naive_k, args.seed)
    assert sel_small == naive_sel
    print(f"select {args.naive_k} of {args.naive_n}: ours {s_cpu:.3f} s CPU, naive recompute-D greedy "
          f"{n_cpu:.1f} s CPU ({n_wall:.1f} wall), same selection: x{n_cpu / s_cpu:.0f}", flush=True)

    bigrams = Bigrams.from_token_ids(ids)
    sel, sel_cpu, sel_wall = timed(select_diverse, bigrams, args.select, args.seed)
    sets, lens = [set(zip(x, x[1:])) for x in ids], [max(len(x) - 1, 0) for x in ids]
    _, scan_cpu, _ = timed(incremental_greedy_steps, sets, lens, args.scan_steps)
    scan_est = scan_cpu / args.scan_steps * args.select
    rand = [r.d for r in random_diversity(bigrams, args.select, 20, args.seed + 1)]
    d_sel = diversity(bigrams, sel).d
    print(f"select {args.select} of {args.n}: ours {sel_cpu:.1f} s CPU ({sel_wall:.1f} wall); incremental greedy "
          f"{scan_cpu / args.scan_steps:.2f} s CPU per step -> ~{scan_est:.0f} s for {args.select} steps "
          f"(extrapolated from {args.scan_steps}): x{scan_est / sel_cpu:.0f}", flush=True)
    print(f"D selected {d_sel:.4f} vs 20 random subsets of {args.select}: mean {statistics.fmean(rand):.4f}, "
          f"max {max(rand):.4f}; all {args.n}: {d.d:.4f}", flush=True)
    print(f"ratio={b_cpu / d_cpu:.2f} select_equal_ratio={n_cpu / s_cpu:.1f} "
          f"select_extrapolated_ratio={scan_est / sel_cpu:.1f} d_ours_s={d_cpu:.3f} d_baseline_s={b_cpu:.3f} "
          f"select_s={sel_cpu:.1f} select_n={args.select} n={args.n} d_selected={d_sel:.4f} "
          f"d_random_mean={statistics.fmean(rand):.4f} d_random_max={max(rand):.4f} tokenize_s={tok_wall:.1f}")


if __name__ == "__main__":
    main()

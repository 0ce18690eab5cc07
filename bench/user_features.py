"""Benchmark: user-model feature extraction (`personalign.users.features.cached_features`, as
`users train` runs it) vs a plain `SentenceTransformer.encode` loop over the same texts.

* ours:     the texts of N synthetic users (`data synth`: 4 history pairs, the target pair, 4 comments,
            the demographic text each), deduplicated, sorted by length over the whole file and encoded
            in batches of 256, written to the feature cache (a cold cache: computed, not read).
* baseline: what a research script does, one `encode` call per record with that record's texts, in
            file order (LoRe's and VPL's embedding scripts embed example by example), at the same
            batch size; the same MiniLM, fp32, same threads.
* also:     one `encode` call over every text at once (`vs_one_call`: ours over it).

The two first runs warm the model; then ours and the baseline alternate --repeats times; medians.
Both produce the same vectors (max abs difference printed).

Usage: .venv/bin/python bench/user_features.py [--users 300] [--repeats 3]
The last line reads `ratio=<baseline/ours seconds> ours_s=... baseline_s=... vs_one_call=... texts_per_s=...`.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from personalign.curate.synth import synth_records
from personalign.records.io import read_examples, write_jsonl
from personalign.users.features import FeatureSpec, Featurizer, TextTable, cached_features
from personalign.users.population import group_users


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp())
    data = root / "users.jsonl"
    write_jsonl(synth_records(args.users, seed=5), data)
    spec = FeatureSpec()
    featurizer = Featurizer(spec)
    records = [[t for p in ex.user.pairs for t in (p.chosen, p.rejected)] + [ex.chosen, ex.rejected]
               + [c.comment for c in ex.user.ugc] + ([ex.user.demographic] if ex.user.demographic else [])
               for ex in read_examples(data)]
    texts = [t for r in records for t in r]

    def ours() -> tuple[float, np.ndarray]:
        shutil.rmtree(root / ".personalign-cache", ignore_errors=True)
        started = time.perf_counter()
        table = TextTable(with_prompt=False)
        group_users(read_examples(data), table)
        feats = np.asarray(cached_features(data, "bench", spec, table, progress=False, featurizer=featurizer))
        elapsed = time.perf_counter() - started
        return elapsed, feats[[table.rows[("", t)] for t in texts]]

    def baseline() -> tuple[float, np.ndarray]:
        started = time.perf_counter()
        out = [featurizer.model.encode(r, batch_size=spec.batch_size, normalize_embeddings=True,
                                       convert_to_numpy=True, show_progress_bar=False) for r in records]
        return time.perf_counter() - started, np.concatenate(out)

    def one_call() -> float:
        started = time.perf_counter()
        featurizer.model.encode(texts, batch_size=spec.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                                show_progress_bar=False)
        return time.perf_counter() - started

    ours(), baseline()
    o, b, one = [], [], []
    for _ in range(args.repeats):
        t, ours_feats = ours()
        o.append(t)
        t, base_feats = baseline()
        b.append(t)
        one.append(one_call())
    diff = float(np.abs(ours_feats - base_feats).max())
    om, bm, onem = statistics.median(o), statistics.median(b), statistics.median(one)
    print(json.dumps({"users": args.users, "texts": len(texts), "unique": len(set(texts)), "ours_s": o,
                      "baseline_s": b, "one_call_s": one, "max_abs_diff": diff}))
    shutil.rmtree(root, ignore_errors=True)
    print(f"ratio={bm / om:.2f} ours_s={om:.2f} baseline_s={bm:.2f} vs_one_call={onem / om:.2f} "
          f"texts_per_s={len(texts) / om:.1f} max_abs_diff={diff:.2e}")


if __name__ == "__main__":
    main()

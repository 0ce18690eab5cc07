"""Ranking-k data (docs/formats.md, "Ranking-k files"): ranking-k files from ranking-n, and nested equal-budget subsets.

* `rank_split`: each record keeps k of its n responses. Per record one seeded permutation of the
  n positions is drawn (seeded by the split seed and the record's index, independent of which ks
  are asked for); ranking-k keeps the first k positions of it, in best-first order (the reader
  has already sorted by reward, so this is the reward order). So every k-file is reproducible on
  its own, all k-files hold the same prompts in the same order, and a record's k responses are a
  subset of its k+1 responses.
* `equal_budget_subsets`: the prompt indices are shuffled once (seeded); the subset for k is the
  first budget/k indices of that shuffle, taken from the ranking-k file. N × k = budget for every
  k, and the prompts of a larger k are a prefix of (so a subset of) those of a smaller k.
"""
from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from math import lcm
from pathlib import Path
from typing import Any

from personalign.files import write_json as write_json_file
from personalign.records.errors import RecordError
from personalign.records.io import RECORD_SUFFIXES, Source, iter_raw, write_jsonl, write_records
from personalign.records.schema import CHOSEN, PROMPT, REJECTED, RESPONSES, Example
from personalign.records.validate import to_example, to_record

MANIFEST = "manifest.json"
RANK_SPLIT_OUTPUTS = ("*.k[0-9]*",)  # what `rank_split` writes into its directory (`<stem>.k<k><suffix>`)
SUBSET_OUTPUTS = ("k[0-9]*-n[0-9]*.jsonl", MANIFEST)  # what `equal_budget_subsets` writes


def read_records(source: Source) -> Iterator[tuple[dict[str, Any], Example]]:
    """(verbatim record, validated Example) pairs; the first invalid record raises its `RecordError`."""
    for rec in iter_raw(source):
        if isinstance(rec.value, RecordError):
            raise rec.value
        yield rec.value, to_example(rec.value, file=rec.file, line=rec.line)


def pick_records(source: Source, indices: Sequence[int]) -> list[dict[str, Any]]:
    """The verbatim records at `indices` (0-based record positions), in the order of `indices`."""
    wanted = {i: n for n, i in enumerate(indices)}
    if len(wanted) != len(indices):
        raise ValueError("indices must be distinct")
    out: list[Any] = [None] * len(indices)
    count = 0
    for count, (raw, _) in enumerate(read_records(source), 1):
        slot = wanted.get(count - 1)
        if slot is not None:
            out[slot] = raw
    if indices and max(indices) >= count:
        raise ValueError(f"{os.fspath(source)}: index {max(indices)} is out of range ({count} records)")
    return out


# ---------------------------------------------------------------------------------------- rank-split


def _ranking_record(ex: Example) -> dict[str, Any]:
    """`to_record`, but always in the ranking form (`responses`, never `chosen`/`rejected`)."""
    rec = to_record(ex)
    if CHOSEN in rec:
        rest = {k: v for k, v in rec.items() if k not in (PROMPT, CHOSEN, REJECTED)}
        rec = {PROMPT: ex.prompt, RESPONSES: list(ex.responses), **rest}
    return rec


def keep_k(ex: Example, k: int, seed: int, index: int) -> Example:
    """`ex` with k of its responses: the first k positions of a permutation seeded by (seed, index)."""
    n = len(ex.responses)
    if k > n:
        raise RecordError(ex.source or "<record>", None, RESPONSES, f"has {n} responses, cannot keep {k}")
    order = random.Random(f"{seed}/{index}").sample(range(n), n)
    keep = sorted(order[:k])
    rewards = None if ex.rewards is None else [ex.rewards[i] for i in keep]
    return Example(ex.prompt, [ex.responses[i] for i in keep], rewards, ex.user, ex.extra, ex.source)


def _output_suffix(source: Source) -> str:
    suffix = Path(os.fspath(source)).suffix.lower()
    return suffix if suffix in RECORD_SUFFIXES and Path(os.fspath(source)).is_file() else ".jsonl"


def rank_split(source: Source, ks: Iterable[int], out_dir: str | os.PathLike, seed: int = 0) -> dict[int, Path]:
    """Write one ranking-k file per k to `out_dir` (`<stem>.k<k><suffix>`); returns {k: path}.

    Streams the source once per k. Every k must be ≥ 2 and at most each record's response count.
    """
    ks = sorted(set(ks))
    if not ks or ks[0] < 2:
        raise ValueError(f"every k must be at least 2, got {ks}")
    stem = Path(os.fspath(source).rstrip("/")).name.split(":")[0]
    stem = stem[: -len(Path(stem).suffix)] if Path(stem).suffix.lower() in RECORD_SUFFIXES else stem
    suffix = _output_suffix(source)
    out: dict[int, Path] = {}
    for k in ks:
        path = Path(out_dir) / f"{stem}.k{k}{suffix}"
        records = (_ranking_record(keep_k(ex, k, seed, i)) for i, (_, ex) in enumerate(read_records(source)))
        write_records(records, path)
        out[k] = path
    return out


# ---------------------------------------------------------------------------------------- subsets


@dataclass(slots=True)
class KFile:
    """A ranking-k file: its k, record count, SHA-256 of the bytes and of its prompt sequence."""

    path: Path
    k: int
    records: int
    sha256: str
    prompts_sha256: str


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def scan_kfile(path: str | os.PathLike) -> KFile:
    """Read a ranking-k file once: check every record has the same number of responses."""
    path = Path(path)
    k, count, prompts = None, 0, hashlib.sha256()
    for count, (raw, ex) in enumerate(read_records(path), 1):
        n = len(ex.responses)
        if k is None:
            k = n
        elif n != k:
            where = ex.source or f"{path}:{count}"
            raise RecordError(where, None, RESPONSES, f"has {n} responses but the file's first record has {k}: "
                              "a ranking-k file needs the same k in every record")
        prompts.update(ex.prompt.encode("utf-8", "surrogatepass") + b"\0")
    return KFile(path, k, count, file_sha256(path), prompts.hexdigest())


def find_kfiles(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Record files among `inputs`: files as given, and directories' record files (sorted by name;
    manifests and `.rejects.jsonl` files left out)."""
    out: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            out += sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in RECORD_SUFFIXES
                          and p.name != MANIFEST and not p.name.endswith(".rejects.jsonl"))
        elif item.is_file():
            out.append(item)
        else:
            raise FileNotFoundError(f"no such file or directory: {item}")
    return out


def equal_budget_subsets(
    inputs: Sequence[str | os.PathLike], budget: int, ks: Iterable[int], out_dir: str | os.PathLike, seed: int = 0
) -> dict[str, Any]:
    """Write nested equal-budget subsets `k<k>-n<N>.jsonl` (N × k = budget) and `manifest.json`
    to `out_dir`; returns the manifest.

    `inputs` are ranking-k files or directories of them; each requested k needs exactly one
    file with k responses in every record, and all those files must hold the same prompts in
    the same order (as `rank_split` writes them). Files with other ks are ignored.
    """
    ks = sorted(set(ks))
    if not ks:
        raise ValueError("no k given")
    if budget < 1:
        raise ValueError(f"budget must be positive, got {budget}")
    bad = [k for k in ks if budget % k]
    if bad:
        raise ValueError(f"budget {budget} is not divisible by k={', '.join(map(str, bad))}: N × k = budget "
                         f"needs a budget that every k divides (e.g. {_lcm_multiple(ks, budget)})")
    by_k: dict[int, KFile] = {}
    for path in find_kfiles(inputs):
        kf = scan_kfile(path)
        if kf.k not in ks:
            continue
        if kf.k in by_k:
            raise ValueError(f"two input files have k={kf.k}: {by_k[kf.k].path} and {kf.path}")
        by_k[kf.k] = kf
    missing = [k for k in ks if k not in by_k]
    if missing:
        raise ValueError(f"no input file has k={', '.join(map(str, missing))} responses per record; "
                         "make ranking-k files with `personalign data rank-split`")
    first = by_k[ks[0]]
    for kf in by_k.values():
        if (kf.records, kf.prompts_sha256) != (first.records, first.prompts_sha256):
            raise ValueError(f"{kf.path} and {first.path} do not hold the same prompts in the same order "
                             f"({kf.records} and {first.records} records)")
    n_total = first.records
    need = budget // ks[0]
    if need > n_total:
        raise ValueError(f"budget {budget} needs {need} prompts for k={ks[0]} but the data has only {n_total} "
                         f"(the largest budget for these ks is {_max_budget(ks, n_total)})")
    order = random.Random(seed).sample(range(n_total), n_total)
    out_dir = Path(out_dir)
    subsets = []
    for k in ks:
        n = budget // k
        name = f"k{k}-n{n}.jsonl"
        write_jsonl(pick_records(by_k[k].path, order[:n]), out_dir / name)
        subsets.append({"k": k, "n": n, "file": name, "source": os.fspath(by_k[k].path),
                        "source_sha256": by_k[k].sha256})
    manifest = {"budget": budget, "seed": seed, "prompts": n_total, "prompts_sha256": first.prompts_sha256,
                "subsets": subsets}
    write_json_file(out_dir / MANIFEST, manifest)
    return manifest


def _lcm_multiple(ks: Sequence[int], near: int) -> int:
    """The multiple of lcm(ks) closest to `near` (at least lcm(ks))."""
    m = lcm(*ks)
    return max(m, round(near / m) * m)


def _max_budget(ks: Sequence[int], n_total: int) -> int:
    m = lcm(*ks)
    return n_total * ks[0] // m * m

"""On-disk cache of response log-probs, keyed by (model, data, view, max length).

Reference log-probs are computed once and reused by evaluation and training; the training loop
therefore never holds the reference model. Files live next to the data in `.personalign-cache/`
(or under the personalign home when the data directory is read-only) as safetensors.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from personalign.files import discard_corrupt
from personalign.models.loading import personalign_home
from personalign.models.logprobs import ResponseScores

CACHE_DIRNAME = ".personalign-cache"
_CHUNK = 1 << 20


def data_digest(source: str | os.PathLike) -> str:
    """Content hash of a data file; for a directory its files' names, sizes and mtimes; else the name."""
    path = Path(source)
    h = hashlib.sha256()
    if path.is_file():
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    elif path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            st = f.stat()
            h.update(f"{f.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}".encode())
    else:
        h.update(os.fspath(source).encode())
    return h.hexdigest()[:16]


def cache_key(**parts: object) -> str:
    """Stable short hash of named parts (model fingerprint, data digest, view config, lengths...)."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cache_dir(source: str | os.PathLike) -> Path:
    """`.personalign-cache` beside the data when writable, else `<home>/cache/logprobs`."""
    path = Path(source)
    parent = path.parent if path.is_file() else path if path.is_dir() else None
    if parent is not None and os.access(parent, os.W_OK):
        return parent / CACHE_DIRNAME
    return personalign_home() / "cache" / "logprobs"


def save_scores(path: Path, scores: Sequence[ResponseScores], meta: dict[str, str]) -> None:
    """Write scores atomically (temp file + rename)."""
    n = len(scores)
    width = max((len(s.logp) for s in scores), default=0)
    logp = torch.full((n, width), float("nan"), dtype=torch.float64)
    n_tokens = torch.zeros((n, width), dtype=torch.int64)
    truncated = torch.zeros(n, dtype=torch.uint8)
    for i, s in enumerate(scores):
        k = len(s.logp)
        logp[i, :k] = torch.tensor(s.logp, dtype=torch.float64)
        n_tokens[i, :k] = torch.tensor(s.n_tokens, dtype=torch.int64)
        truncated[i] = int(s.truncated)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({"logp": logp, "n_tokens": n_tokens, "truncated": truncated}, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_scores(path: Path) -> list[ResponseScores]:
    """Read scores written by `save_scores` (any failure to read them raises)."""
    t = load_file(str(path))
    out = []
    for logp, n_tok, cut in zip(t["logp"].tolist(), t["n_tokens"].tolist(), t["truncated"].tolist()):
        k = sum(1 for n in n_tok if n > 0)
        s, n = logp[:k], n_tok[:k]
        out.append(ResponseScores(s, [a / c for a, c in zip(s, n)], n, bool(cut)))
    return out


def cached_scores(
    source: str | os.PathLike, key_parts: dict[str, object], compute: Callable[[], Sequence[ResponseScores]],
    *, write: bool = True, fits: Callable[[list[ResponseScores]], bool] | None = None,
) -> tuple[list[ResponseScores], Path, bool]:
    """Load the scores for `key_parts` of `source`, or compute and store them.

    Returns (scores, cache file, hit). `write=False` lets non-main processes skip the write. An
    entry that cannot be read, or that `fits` rejects, is reported, deleted and recomputed.
    """
    key = cache_key(data=data_digest(source), **key_parts)
    path = cache_dir(source) / f"logprobs-{key}.safetensors"
    if path.is_file():
        try:
            scores = load_scores(path)
        except Exception as e:  # noqa: BLE001 - safetensors, torch and OS errors all mean "unreadable"
            scores, why = None, f"{type(e).__name__}: {e}"
        else:
            why = None if fits is None or fits(scores) else "it does not match the data"
        if why is None:
            return scores, path, True
        if write:
            discard_corrupt(path, why)
    scores = list(compute())
    if write:
        save_scores(path, scores, {k: json.dumps(v, default=str) for k, v in key_parts.items()})
    return scores, path, False

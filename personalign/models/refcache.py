"""On-disk cache of response log-probs, one file per (token store, model, precision, kernel).

Reference log-probs are computed once and reused by evaluation and training; the training loop
therefore never holds the reference model. A cache file lives inside the token store it scores
(`<store>/logprobs-<key>.safetensors`), so the store's own key (data, tokenizer, view, max_length,
limit, on_invalid) is part of it; `scores_path` is the one place that key is built. While a pass
runs, its finished batches sit in `<file>.partial/` (see `personalign.models.scorer`), so a killed
pass resumes; the directory goes once the file is written.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from personalign.files import cache_key, discard_corrupt
from personalign.models.loading import model_fingerprint
from personalign.models.scorer import ScoreTable
from personalign.models.settings import ModelSettings
from personalign.tokenstore.store import TokenStore


def precision(settings: ModelSettings, *, bf16_autocast: bool = False) -> str:
    """The precision scores are computed in, as a cache-key part."""
    weights = "" if settings.dtype == "float32" else f"{settings.dtype}-weights+"
    return weights + ("bfloat16-autocast" if bf16_autocast else "float32")


def scores_path(store: TokenStore, model: str, settings: ModelSettings, *, bf16_autocast: bool = False) -> Path:
    """The cache file of `model`'s scores of `store` (rows with extra responses, such as KTO's, carry a
    `suffix` of their own)."""
    key = cache_key(store=store.path.name + getattr(store, "suffix", ""), model=model_fingerprint(model),
                    precision=precision(settings, bf16_autocast=bf16_autocast), **settings.kernel_key())
    return store.path / f"logprobs-{key}.safetensors"


def save_table(path: Path, table: ScoreTable, meta: dict[str, str] | None = None) -> None:
    """Write a score table atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({"logp": table.logps.double().contiguous(), "n_tokens": table.n_tokens.contiguous()}, str(tmp),
              metadata=meta)
    os.replace(tmp, path)


def load_table(path: Path) -> ScoreTable:
    """Read a table written by `save_table` (any failure to read it raises)."""
    t = load_file(str(path))
    return ScoreTable(t["logp"].float(), t["n_tokens"].long())


def journal_dir(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def cached_table(path: Path, compute: Callable[[Path], ScoreTable], *, write: bool = True,
                 fits: Callable[[ScoreTable], bool] | None = None, meta: dict | None = None) -> tuple[ScoreTable, bool]:
    """The table at `path`, or `compute(journal directory)` stored there: (table, hit).

    `write=False` lets non-main processes skip the write. An entry that cannot be read, or that
    `fits` rejects, is reported, deleted and recomputed.
    """
    if path.is_file():
        try:
            table = load_table(path)
        except Exception as e:  # noqa: BLE001 - safetensors, torch and OS errors all mean "unreadable"
            table, why = None, f"{type(e).__name__}: {e}"
        else:
            why = None if fits is None or fits(table) else "it does not match the data"
        if why is None:
            return table, True
        if write:
            discard_corrupt(path, why)
    table = compute(journal_dir(path))
    if write:
        save_table(path, table, {k: json.dumps(v, default=str) for k, v in (meta or {}).items()})
        shutil.rmtree(journal_dir(path), ignore_errors=True)
    return table, False


def table_fits(store: TokenStore) -> Callable[[ScoreTable], bool]:
    """A `fits` check: one row per store row, a count for exactly each row's responses."""
    def fits(table: ScoreTable) -> bool:
        if len(table) != len(store) or table.n_tokens.shape[1] < store.width:
            return False
        return bool(torch.equal((table.n_tokens > 0).sum(1), torch.from_numpy(store.num_responses)))
    return fits

"""Crash-safe generation cache: an append-only JSONL of {"key", "output"} lines.

Every chunk of generations is appended, flushed and fsync'd as soon as it is produced, so a
killed run loses at most the chunk in flight. On open, a torn last line (a kill mid-write) is
cut off the file before anything new is appended; complete lines that do not parse are skipped
and counted; a warning names them and they are deleted from the file (so they are generated again).
One process writes a cache file at a time.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from personalign.errors import OutputError
from personalign.files import write_bytes
from personalign.llm.base import Backend, GenerationConfig, Request

log = logging.getLogger("personalign")


def cache_key(*parts: object) -> str:
    """sha256 of the canonical JSON of `parts`."""
    blob = json.dumps(parts, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class GenerationCache:
    """Outputs by key, loaded from `path` and appended to it; use as a context manager."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.entries: dict[str, str] = {}
        self.skipped_lines = 0
        self.truncated_bytes = 0
        self._load()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")

    def _load(self) -> None:
        if not self.path.exists():
            return
        if not self.path.is_file():
            raise OutputError("the generation cache is not a file", file=self.path, option="--cache")
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            self.truncated_bytes = len(data) - end
            with open(self.path, "r+b") as f:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
        good = []
        for line in data[:end].splitlines():
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                key, output = item["key"], item["output"]
            except (ValueError, KeyError, TypeError):
                self.skipped_lines += 1
                continue
            if isinstance(key, str) and isinstance(output, str):
                self.entries[key] = output
                good.append(line)
            else:
                self.skipped_lines += 1
        if self.skipped_lines:
            log.warning("generation cache %s: %d unreadable entries deleted; they are generated again",
                        self.path, self.skipped_lines)
            write_bytes(self.path, b"".join(g + b"\n" for g in good))

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str) -> str | None:
        return self.entries.get(key)

    def add(self, items: Sequence[tuple[str, str]]) -> None:
        """Append (key, output) pairs and make them durable before returning."""
        if not items:
            return
        self._f.write("".join(json.dumps({"key": k, "output": o}, ensure_ascii=False) + "\n" for k, o in items))
        self._f.flush()
        os.fsync(self._f.fileno())
        self.entries.update(items)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> GenerationCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(slots=True)
class Generated:
    """Outputs in request order; `generated` new generations, and `reused` requests answered
    without one (found in the cache, or identical to another request of the call)."""

    outputs: list[str]
    generated: int
    reused: int


def generate_cached(
    backend: Backend,
    requests: Sequence[Request],
    config: GenerationConfig,
    *,
    task: str,
    cache: GenerationCache | None = None,
    chunk_size: int = 8,
    on_progress: Callable[[int], None] | None = None,
) -> Generated:
    """Generate one output per request, reusing and extending `cache`.

    The key of a request is the hash of (backend identity, `task` — name and template version —,
    generation settings, the request itself); identical requests are generated once. Missing
    outputs are generated `chunk_size` at a time and each chunk is stored before the next
    starts. `on_progress(n)` reports n more requests done (cached ones first).
    """
    settings = config.model_dump(mode="json")
    keys = [cache_key(backend.identity, task, settings, r) for r in requests]
    found: dict[str, str] = {}
    if cache is not None:
        found = {k: v for k in keys if (v := cache.get(k)) is not None}
    todo: dict[str, Request] = {}
    for k, r in zip(keys, requests):
        if k not in found:
            todo.setdefault(k, r)
    n_cached = sum(k in found for k in keys)
    if on_progress is not None and n_cached:
        on_progress(n_cached)
    counts = {k: 0 for k in todo}
    for k in keys:
        if k in counts:
            counts[k] += 1
    pending = list(todo.items())
    for start in range(0, len(pending), chunk_size):
        chunk = pending[start:start + chunk_size]
        outputs = backend.generate([r for _, r in chunk], config, progress=False)
        if len(outputs) != len(chunk):
            raise RuntimeError(f"backend {backend.identity} returned {len(outputs)} outputs for {len(chunk)} requests")
        items = [(k, o) for (k, _), o in zip(chunk, outputs)]
        if cache is not None:
            cache.add(items)
        found.update(items)
        if on_progress is not None:
            on_progress(sum(counts[k] for k, _ in chunk))
    return Generated([found[k] for k in keys], len(pending), len(keys) - len(pending))

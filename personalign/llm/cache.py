"""Crash-safe generation cache: an append-only JSONL of {"key", "output"} lines.

Every chunk of generations is appended, flushed and fsync'd as soon as it is produced, so a
killed run loses at most the chunk in flight. On open, a torn last line (a kill mid-write) is
cut off the file before anything new is appended; complete lines that do not parse are skipped
and counted; a warning names them and they are deleted from the file (so they are generated again).
One process writes a cache file at a time: under `accelerate launch` (see `open_cache`) each
process appends to its own shard `<cache>.rank<r>`, the processes exchange what they generated
after every call, and the main process merges the shards into the cache when it is closed (or,
after a kill, when the next run opens it).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personalign.errors import OutputError
from personalign.files import write_bytes
from personalign.llm.base import Backend, GenerationConfig, Request

log = logging.getLogger("personalign")


def generation_key(*parts: object) -> str:
    """sha256 of the canonical JSON of `parts`."""
    blob = json.dumps(parts, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def read_cache(path: Path) -> tuple[dict[str, str], list[bytes], int, int]:
    """(entries, their lines, unreadable complete lines, bytes of a torn last line) of a cache file."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    entries: dict[str, str] = {}
    good, skipped = [], 0
    for line in data[:end].splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            key, output = item["key"], item["output"]
        except (ValueError, KeyError, TypeError):
            skipped += 1
            continue
        if isinstance(key, str) and isinstance(output, str):
            entries[key] = output
            good.append(line)
        else:
            skipped += 1
    return entries, good, skipped, len(data) - end


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
        self.entries, good, self.skipped_lines, torn = read_cache(self.path)
        if torn:
            self.truncated_bytes = torn
            with open(self.path, "r+b") as f:
                f.truncate(self.path.stat().st_size - torn)
                f.flush()
                os.fsync(f.fileno())
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

    def remember(self, items: Sequence[tuple[str, str]]) -> None:
        """Know outputs another process generated (and stored in its own shard)."""
        self.entries.update(items)

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


def shard_path(path: Path, rank: int) -> Path:
    return path.with_name(f"{path.name}.rank{rank}")


def merge_shards(path: Path) -> int:
    """Append the entries of every `<path>.rank<r>` shard that `path` lacks, then delete the shards."""
    shards = sorted(path.parent.glob(f"{path.name}.rank*")) if path.parent.is_dir() else []
    if not shards:
        return 0
    added = 0
    with GenerationCache(path) as main:
        for shard in shards:
            with GenerationCache(shard) as part:
                new = [(k, o) for k, o in part.entries.items() if k not in main]
            main.add(new)
            added += len(new)
            shard.unlink()
    return added


class ShardedCache(GenerationCache):
    """One process's view of a cache shared by the processes of a launch: it appends to its own
    shard and knows the merged cache; closing it merges every shard into the cache (main process)."""

    def __init__(self, path: str | os.PathLike, state: Any):
        self.main_path, self.state = Path(path), state
        if state.is_main_process:
            merge_shards(self.main_path)  # what a killed run left in shards
        state.wait_for_everyone()
        super().__init__(shard_path(self.main_path, state.process_index))
        if self.main_path.is_file():
            self.entries.update(read_cache(self.main_path)[0])

    def close(self) -> None:
        super().close()
        self.state.wait_for_everyone()
        if self.state.is_main_process:
            merge_shards(self.main_path)
        self.state.wait_for_everyone()


def open_cache(path: str | os.PathLike, state: Any = None) -> GenerationCache:
    """The generation cache at `path`: shared through per-process shards when `state` (an accelerate
    state) has several processes, else the file itself."""
    if state is not None and state.num_processes > 1:
        return ShardedCache(path, state)
    return GenerationCache(path)


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
    state: Any = None,
) -> Generated:
    """Generate one output per request, reusing and extending `cache`.

    The key of a request is the hash of (backend identity, `task` — name and template version —,
    generation settings, the request itself); identical requests are generated once. Missing
    outputs are generated `chunk_size` at a time and each chunk is stored before the next
    starts. `on_progress(n)` reports n more requests done (cached ones first).

    With `state` (an accelerate state) of several processes, every process calls this with the same
    requests and generates every world-th missing one into its own `ShardedCache` shard; the
    outputs are then exchanged, so each process returns them all and no request is generated twice.
    """
    settings = config.model_dump(mode="json")
    keys = [generation_key(backend.identity, task, settings, r) for r in requests]
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
    world = 1 if state is None else state.num_processes
    mine = pending[state.process_index::world] if world > 1 else pending
    fresh: list[tuple[str, str]] = []
    for start in range(0, len(mine), chunk_size):
        chunk = mine[start:start + chunk_size]
        outputs = backend.generate([r for _, r in chunk], config, progress=False)
        if len(outputs) != len(chunk):
            raise RuntimeError(f"backend {backend.identity} returned {len(outputs)} outputs for {len(chunk)} requests")
        items = [(k, o) for (k, _), o in zip(chunk, outputs)]
        if cache is not None:
            cache.add(items)
        found.update(items)
        fresh += items
        if on_progress is not None:
            on_progress(sum(counts[k] for k, _ in chunk))
    if world > 1:
        from accelerate.utils import gather_object

        others = [item for item in gather_object(fresh) if item[0] not in found]
        if cache is not None:
            cache.remember(others)
        found.update(others)
        if on_progress is not None and others:
            on_progress(sum(counts[k] for k, _ in others))
    return Generated([found[k] for k in keys], len(pending), len(keys) - len(pending))

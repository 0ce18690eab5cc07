"""One scoring path: `[N, R]` response log-probs of a token store, sharded over processes, resumable.

`ResponseLogprobs` is the module a training run hands to accelerate: its forward takes a packed
batch and returns summed response log-probs, so the decoder *and* the LM head run inside the
forward of the prepared (DDP/FSDP/DeepSpeed-wrapped) module, where FSDP and ZeRO-3 gather and
reshard their weights.

`score_store` scores every row of a store without gradients. Length-sorted batches are dealt
round-robin to the processes; a process with fewer batches than the others repeats one and drops
its result, so every rank runs the same number of forwards (sharded engines run collectives in
each forward) and does nearly the same work. Each finished batch is appended to a journal (one
file per rank); a killed pass, restarted with any number of processes, scores only what no
journal holds.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from accelerate.utils import gather_object
from rich.console import Console

from personalign.models.logprobs import PackedBatch, length_batches, pack_batch, packed_logprobs, unwrap
from personalign.models.rewards import ResponseRewards, is_reward_model
from personalign.progress import work_progress
from personalign.records.tokens import Tokenized, tokenize_pair


class Rows(Protocol):
    """What `score_store` reads: a `TokenStore`, or `InMemoryRows` for a few examples."""

    packed_lengths: np.ndarray
    width: int

    def __len__(self) -> int: ...

    def examples(self, indices: Sequence[int]) -> list[Tokenized]: ...


@dataclass(frozen=True)
class InMemoryRows:
    """A list of tokenized examples seen as a store."""

    items: Sequence[Tokenized]

    def __len__(self) -> int:
        return len(self.items)

    @property
    def packed_lengths(self) -> np.ndarray:
        return np.array([t.packed_length for t in self.items], dtype=np.int64)

    @property
    def width(self) -> int:
        return max((len(t.response_ids) for t in self.items), default=0)

    def examples(self, indices: Sequence[int]) -> list[Tokenized]:
        return [self.items[i] for i in indices]


class ResponseLogprobs(torch.nn.Module):
    """Wraps a causal LM; forward(**packed batch) -> (`[B, R]` summed log-probs, `[B, R]` counts); `chunk_size`
    as in `packed_logprobs`."""

    def __init__(self, model: torch.nn.Module, chunk_size: int | None = 1024):
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size

    def forward(self, **batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return packed_logprobs(self.model, PackedBatch(**batch), chunk_size=self.chunk_size)


def batch_kwargs(batch: PackedBatch) -> dict[str, torch.Tensor]:
    """A packed batch as the keyword tensors `ResponseLogprobs.forward` takes."""
    return {name: getattr(batch, name) for name in PackedBatch.__slots__}


class _Single:
    """The process state of a run without accelerate: one process."""

    process_index, num_processes, is_main_process = 0, 1, True


@dataclass(frozen=True)
class ScoreTable:
    """`[N, W]` summed log-probs (0 in padded slots) and token counts (0 = no response there)."""

    logps: torch.Tensor
    n_tokens: torch.Tensor

    def __len__(self) -> int:
        return self.logps.shape[0]


class _Journal:
    """Finished batches, one JSON line per batch, one file per rank; unreadable lines are ignored."""

    def __init__(self, directory: Path, rank: int):
        self.directory, self.rank = directory, rank
        self.f = None

    def done(self) -> dict[int, tuple[list[float], list[int]]]:
        rows: dict[int, tuple[list[float], list[int]]] = {}
        for path in sorted(self.directory.glob("rank-*.jsonl")) if self.directory.is_dir() else ():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                    rows.update((int(i), (s, n)) for i, s, n in zip(entry["i"], entry["logp"], entry["n"]))
                except (ValueError, KeyError, TypeError):
                    continue
        return rows

    def add(self, idx: list[int], sums: list[list[float]], counts: list[list[int]]) -> None:
        if self.f is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.f = open(self.directory / f"rank-{self.rank}.jsonl", "a", encoding="utf-8")
        self.f.write(json.dumps({"i": idx, "logp": sums, "n": counts}) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        if self.f is not None:
            self.f.close()


def score_store(
    model: torch.nn.Module,
    rows: Rows,
    *,
    state: Any = None,
    max_tokens_per_batch: int = 8192,
    batch_size: int | None = None,
    journal: str | os.PathLike | None = None,
    progress: bool = True,
    collective: bool = False,
) -> ScoreTable:
    """Score every row of `rows` with `model` (a causal LM, a `ResponseLogprobs`, or one wrapped by
    accelerate: summed log-probs; a reward model or `ResponseRewards`: rewards), sharded over the processes of
    `state` (an `Accelerator` or `PartialState`; None = one process). Every process returns the full table.
    `journal` (a directory) makes the pass resumable: finished batches are kept there, and a rerun scores
    only the rest. Every process runs the same number of forwards (a rank with fewer batches repeats one),
    which a sharded (FSDP, DeepSpeed) `model` needs; `collective=True` says it is one, and scores under
    `no_grad` instead of `inference_mode`, whose tensors its gathered parameters must not become before training."""
    state = state or _Single()
    rank, world = state.process_index, state.num_processes
    log = _Journal(Path(journal), rank) if journal is not None else None
    done = log.done() if log is not None else {}
    if world > 1:
        state.wait_for_everyone()  # every rank has read the journals before any rank adds to them
    lengths = rows.packed_lengths
    todo = np.array([i for i in range(len(rows)) if i not in done], dtype=np.int64)
    batches = [[int(todo[j]) for j in b] for b in length_batches(lengths[todo], max_tokens_per_batch=max_tokens_per_batch,
                                                                  batch_size=batch_size)]
    mine = batches[rank::world]
    rounds = math.ceil(len(batches) / world)
    scorer = model if _is_packed_scorer(model) else (ResponseRewards if is_reward_model(model) else ResponseLogprobs)(model)
    device = next(scorer.parameters()).device
    autocast = getattr(state, "autocast", nullcontext)
    local = _Scored(rows.width)
    bar = work_progress(enabled=progress and state.is_main_process)
    was_training = model.training  # the caller's module: a fresh wrapper is in training mode
    scorer.eval()
    try:
        with torch.no_grad() if collective else torch.inference_mode(), autocast(), bar:
            task = bar.add_task("scoring", total=len(todo))
            for r in range(rounds):
                idx = mine[r] if r < len(mine) else batches[-1]  # a repeat keeps the ranks in step
                sums, counts = scorer(**batch_kwargs(pack_batch(rows.examples(idx)).to(device)))
                if r >= len(mine):
                    continue
                local.add(idx, sums.float().cpu().numpy(), counts.cpu().numpy())
                if log is not None:
                    log.add(idx, sums.float().tolist(), counts.tolist())
                bar.advance(task, len(idx) * world)
    finally:
        model.train(was_training)
        if log is not None:
            log.close()
    parts = gather_object([local.arrays()]) if world > 1 else [local.arrays()]
    return _table(len(rows), rows.width, done, parts)


def _is_packed_scorer(model: torch.nn.Module) -> bool:
    """Whether `model` (inside `.module` wrappers) already takes packed batches (log-probs or rewards)."""
    return isinstance(unwrap(model), (ResponseLogprobs, ResponseRewards))


class _Scored:
    """This process's results, as arrays (no Python object per record)."""

    def __init__(self, width: int):
        self.width, self.idx, self.sums, self.counts = width, [], [], []

    def add(self, idx: list[int], sums: np.ndarray, counts: np.ndarray) -> None:
        pad = ((0, 0), (0, self.width - sums.shape[1]))
        self.idx.append(np.asarray(idx, dtype=np.int64))
        self.sums.append(np.pad(sums, pad))
        self.counts.append(np.pad(counts, pad))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.idx:
            return (np.zeros(0, np.int64), np.zeros((0, self.width), np.float32), np.zeros((0, self.width), np.int64))
        return np.concatenate(self.idx), np.concatenate(self.sums), np.concatenate(self.counts)


def _table(n: int, width: int, done: dict, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> ScoreTable:
    logps, n_tokens = torch.zeros(n, width), torch.zeros(n, width, dtype=torch.long)
    for i, (s, c) in done.items():
        logps[i, : len(s)], n_tokens[i, : len(c)] = torch.tensor(s), torch.tensor(c)
    for idx, sums, counts in parts:
        index = torch.from_numpy(idx)
        logps[index], n_tokens[index] = torch.from_numpy(sums).float(), torch.from_numpy(counts).long()
    return ScoreTable(logps, n_tokens)


@dataclass(frozen=True, slots=True)
class ResponseScores:
    """Per-response sum and mean token log-prob and token count for one example, in input order."""

    logp: list[float]
    avg_logp: list[float]
    n_tokens: list[int]
    truncated: bool = False


def response_scores(table: ScoreTable, truncated: Sequence[bool]) -> list[ResponseScores]:
    """A table's rows as `ResponseScores` (for the few records a report lists one by one)."""
    out = []
    for s, n, cut in zip(table.logps.tolist(), table.n_tokens.tolist(), truncated):
        k = sum(1 for c in n if c > 0)
        out.append(ResponseScores(s[:k], [a / c for a, c in zip(s[:k], n[:k])], n[:k], bool(cut)))
    return out


def score_responses(
    model: torch.nn.Module,
    tokenizer: Any,
    items: Iterable[tuple[str, Sequence[str]]],
    *,
    max_length: int | None = None,
    max_tokens_per_batch: int = 4096,
    batch_size: int | None = None,
    progress: bool = True,
) -> list[ResponseScores]:
    """Score (rendered prompt, responses) items held in memory: tokenized, then `score_store`."""
    tokenized = [tokenize_pair(tokenizer, prompt, list(responses), max_length) for prompt, responses in items]
    table = score_store(model, InMemoryRows(tokenized), max_tokens_per_batch=max_tokens_per_batch,
                        batch_size=batch_size, progress=progress)
    n_cut = sum(t.truncated for t in tokenized)
    if n_cut and progress:
        Console(stderr=True).print(f"{n_cut} of {len(tokenized)} examples truncated to max_length={max_length}")
    return response_scores(table, [t.truncated for t in tokenized])

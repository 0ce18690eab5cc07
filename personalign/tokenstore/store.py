"""The token store: records rendered under a view and tokenized once, on disk, memory-mapped.

`build_token_store` streams records (`read_examples`) through the view and the tokenizer into
Arrow IPC part files, a record batch at a time, so its peak memory does not grow with the number of
records; with `num_proc > 1` worker processes render and tokenize chunks while the main process
reads, validates and writes them in order. The store is keyed by (data digest, tokenizer, view and
template, max_length, history-sampling seed, which responses, limit, on_invalid) and lives beside
the data (`.personalign-cache/tokens-<key>/`); a finished store has a `meta.json` (written last).
A build writes into `tokens-<key>.partial/`, one part per `_PART` records, each part's counts
written after its rows: a killed build resumes there, re-reading the records it already has but
tokenizing only the parts that are missing, and ends with the same rows as an uninterrupted build.
`TokenStore` reads the parts back memory-mapped: training, reference scoring and evaluation take
the rows of one batch at a time (`examples(indices)`), never all.

A record the objective cannot use (too few responses, an empty prompt) is a bad record like one
that fails validation: `on_invalid='fail'` stops at it (file, line and field), `'skip'` counts it
and appends it to the rejects file.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import shutil
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from filelock import FileLock
from rich.progress import TextColumn

from personalign.errors import EmptyError, UserError
from personalign.files import cache_dir, cache_key, data_digest, read_json_object, write_json
from personalign.progress import work_progress
from personalign.records.errors import RecordError
from personalign.records.io import OnInvalid, ReadCounts, Source, default_rejects_path, read_examples, record_count
from personalign.records.schema import Example
from personalign.records.tokens import Tokenized, tokenize_pair
from personalign.views.build import Rendered, ViewConfig, ViewCounts, build_view, persona_sides
from personalign.views.templates import response_convention, template_warning

STORE_VERSION = 4  # 2: the label column; 3: sft_index, template response conventions; 4: part files
PART_GLOB = "part-*.arrow"
META_FILE = "meta.json"
Responses = Literal["all", "best"]  # keep every response (DPO, PRO, scoring) or only the best (SFT)
Need = Literal["any", "pair", "ranking", "kto"]  # what the objective needs: >= 1, exactly 2, >= 2, 1 or 2 responses
_NEED = {"pair": (lambda n: n == 2, "exactly 2 responses (a pair)"),
         "ranking": (lambda n: n >= 2, "at least 2 responses (a ranking)"),
         "any": (lambda n: n >= 1, "at least 1 response"),
         "kto": (lambda n: n in (1, 2), "a pair, or one completion with a label")}
SCHEMA = pa.schema([
    ("prompt_ids", pa.list_(pa.int32())),
    ("response_ids", pa.list_(pa.list_(pa.int32()))),
    ("prompt_cut", pa.int32()),
    ("response_cut", pa.int32()),
    ("packed_length", pa.int32()),
    ("rewards", pa.list_(pa.float64())),
    ("label", pa.bool_()),
    ("sft_index", pa.int32()),
    ("source", pa.string()),
    ("slice", pa.string()),
])
_CHUNK = 256  # records per worker task
_PART = 16 * _CHUNK  # records per part file: what a killed build keeps
_WRITE_BATCH = 1024  # rows per Arrow record batch


@dataclass(frozen=True, slots=True)
class StoreSpec:
    """What a store holds, beyond its data and tokenizer."""

    view: ViewConfig
    max_length: int | None
    responses: Responses = "all"
    need: Need = "any"
    limit: int | None = None
    on_invalid: OnInvalid = "fail"
    columns: dict[str, str] | None = None  # field renames applied when reading (see `read_examples`)
    max_prompt_tokens: int | None = None  # keep each prompt's last N tokens (see `tokenize_pair`)

    def key_parts(self) -> dict[str, Any]:
        return {"view": self.view.model_dump(mode="json"), "max_length": self.max_length, "responses": self.responses,
                "need": self.need, "limit": self.limit, "on_invalid": self.on_invalid, "version": STORE_VERSION,
                **({"columns": self.columns} if self.columns else {}),
                **({"max_prompt_tokens": self.max_prompt_tokens} if self.max_prompt_tokens else {})}


@dataclass(slots=True)
class StoreCounts:
    """What a build saw: records stored, tokens, truncations, rejects, view counters."""

    records: int = 0
    tokens: int = 0
    prompt_tokens: int = 0
    response_tokens: int = 0
    truncated_for_length: int = 0
    responses_cut: int = 0
    rejected: int = 0
    rejected_by_field: dict[str, int] = field(default_factory=dict)
    view: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"records": self.records, "tokens": self.tokens, "prompt_tokens": self.prompt_tokens,
                "response_tokens": self.response_tokens, "truncated_for_length": self.truncated_for_length,
                "responses_cut": self.responses_cut, "rejected": self.rejected, "rejected_by_field": dict(self.rejected_by_field),
                **{f"view_{k}": v for k, v in self.view.items() if k != "records"}}


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Hash of what decides token ids: the tokenizer's class, vocabulary and merges, special tokens,
    chat template and BOS convention (cached on the tokenizer)."""
    cached = getattr(tokenizer, "_personalign_fingerprint", None)
    if cached is not None:
        return cached
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    for part in (body, str(getattr(tokenizer, "chat_template", None)), json.dumps(tokenizer.special_tokens_map,
                 sort_keys=True, default=str), str(tokenizer("a", add_special_tokens=True)["input_ids"])):
        h.update(part.encode())
    digest = h.hexdigest()[:16]
    try:
        tokenizer._personalign_fingerprint = digest
    except AttributeError:
        pass
    return digest


class TokenStore:
    """A finished token store, memory-mapped; rows are read per batch of indices."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.meta = read_json_object(self.path / META_FILE)
        parts = []
        for part in sorted(self.path.glob(PART_GLOB)):
            with pa.memory_map(str(part)) as source:
                parts.append(pa.ipc.open_file(source).read_all())
        self._table = pa.concat_tables(parts) if parts else SCHEMA.empty_table()

    def __len__(self) -> int:
        return self._table.num_rows

    @property
    def counts(self) -> dict[str, Any]:
        return self.meta["counts"]

    @cached_property
    def packed_lengths(self) -> np.ndarray:
        return self._table.column("packed_length").to_numpy().astype(np.int64)

    @cached_property
    def first_response_lengths(self) -> np.ndarray:
        """Token count of each row's first (best) response."""
        first = pc.list_element(self._table.column("response_ids"), 0)
        return pc.list_value_length(first).to_numpy().astype(np.int64)

    @cached_property
    def num_responses(self) -> np.ndarray:
        return pc.list_value_length(self._table.column("response_ids")).to_numpy().astype(np.int64)

    @property
    def width(self) -> int:
        """The most responses any row has."""
        return int(self.num_responses.max()) if len(self) else 0

    def _rows(self, indices: Sequence[int], columns: list[str]) -> dict[str, list]:
        taken = self._table.select(columns).take(pa.array(np.asarray(indices, dtype=np.int64)))
        return taken.to_pydict()

    def examples(self, indices: Sequence[int]) -> list[Tokenized]:
        """The token ids of rows `indices`, in that order."""
        rows = self._rows(indices, ["prompt_ids", "response_ids", "prompt_cut", "response_cut"])
        return [Tokenized(p, r, pc, rc) for p, r, pc, rc in zip(rows["prompt_ids"], rows["response_ids"],
                                                                 rows["prompt_cut"], rows["response_cut"])]

    def rewards(self, indices: Sequence[int]) -> list[list[float] | None]:
        return self._rows(indices, ["rewards"])["rewards"]

    def sft_indices(self, indices: Sequence[int]) -> list[int | None]:
        """Each row's `sft_index` (ScalingAlignment: the response PRO's SFT term imitates), None = the best;
        no read at all (every batch asks) when no row of the store names one."""
        column = self._table.column("sft_index")
        if column.null_count == len(column):
            return [None] * len(indices)
        return self._rows(indices, ["sft_index"])["sft_index"]

    def labels(self, indices: Sequence[int]) -> list[bool | None]:
        """Unpaired completions' own labels (None for pairs and rankings)."""
        return self._rows(indices, ["label"])["label"]

    def column(self, name: str) -> list:
        """A whole small column (`source`, `slice`) as a list."""
        return self._table.column(name).to_pylist()

    def truncated(self) -> np.ndarray:
        cut = self._table.column("prompt_cut").to_numpy() + self._table.column("response_cut").to_numpy()
        return cut > 0


# ------------------------------------------------------------------------------------------ build


_WORKER: dict[str, Any] = {}


def _init_worker(tokenizer: Any, spec: StoreSpec) -> None:
    cfg = spec.view
    sides = persona_sides(cfg.persona_source) if cfg.view == "persona" else (cfg.persona_source,)
    if spec.max_length is not None and cfg.max_length is None:
        cfg = cfg.model_copy(update={"max_length": spec.max_length})
    _WORKER.update(tokenizer=tokenizer, spec=spec, configs=[
        cfg if s == cfg.persona_source else cfg.model_copy(update={"persona_source": s}) for s in sides])


def _sft_index(ex: Example, n: int) -> int | None:
    """A record's `sft_index` (ScalingAlignment's: which of its `n` ranked responses PRO's SFT term
    imitates), checked; None when it names none."""
    value = ex.extra.get("sft_index")
    if value is None:
        return None
    if type(value) is not int or not 0 <= value < n:
        raise ValueError(f"sft_index must be an integer in [0, {n}), got {value!r}")
    return value


def _where(source: str) -> tuple[str, int | None]:
    file, _, line = source.rpartition(":")
    return (file, int(line)) if file and line.isdigit() else (source, None)


def _tokenize_chunk(chunk: list[tuple[int, Example]]) -> tuple[list[dict], list[Rendered], list[dict]]:
    """(rows, their renderings without the texts (for the view counters), rejects) for (index, example) pairs, with the
    worker's settings."""
    tokenizer, spec = _WORKER["tokenizer"], _WORKER["spec"]
    ok, need = _NEED[spec.need]
    rows, rendered, rejects = [], [], []
    for index, ex in chunk:
        for cfg in _WORKER["configs"]:
            r = build_view(ex, cfg, tokenizer, index)
            n = len(r.responses)
            undesirable = r.label is False and spec.responses == "best"  # sft: nothing to imitate
            field_name = "responses" if not ok(n) else "label" if undesirable else "prompt"
            try:
                if not ok(n):
                    raise ValueError(f"the objective needs {need}, got {n}")
                if undesirable:
                    raise ValueError("an undesirable completion (label false) has no response to imitate")
                field_name, sft_index = "sft_index", _sft_index(ex, n)
                field_name = "prompt"
                if spec.responses == "best":  # sft: the one response to imitate
                    responses, sft_index = [r.responses[sft_index or 0]], None
                else:
                    responses = r.responses
                joiner, eos = response_convention(spec.view.template)
                t = tokenize_pair(tokenizer, r.prompt, responses, spec.max_length,
                                  max_prompt_tokens=spec.max_prompt_tokens, joiner=joiner, eos=eos)
            except ValueError as e:
                rejects.append({"source": r.source, "field": field_name, "error": str(e)})
                continue
            rewards = list(r.rewards[: len(responses)]) if r.rewards is not None else None
            rows.append({"prompt_ids": t.prompt_ids, "response_ids": t.response_ids, "prompt_cut": t.prompt_cut,
                         "response_cut": t.response_cut, "packed_length": t.packed_length, "rewards": rewards, "label": r.label,
                         "sft_index": sft_index,
                         "source": r.source, "slice": r.slice})
            rendered.append(replace(r, prompt="", responses=[], rewards=None, messages=None))
    return rows, rendered, rejects


def _chunks(numbered: Iterator[tuple[int, Example]]) -> Iterator[list[tuple[int, Example]]]:
    while chunk := list(itertools.islice(numbered, _CHUNK)):
        yield chunk


def _tokenized_chunks(numbered: Iterator[tuple[int, Example]], tokenizer: Any, spec: StoreSpec, num_proc: int
                      ) -> Iterator[tuple[int, tuple[list[dict], list[dict], list[dict]]]]:
    """(records in the chunk, its rows, renderings and rejects) for chunks of (position, example),
    tokenized in order: in this process, or by `num_proc` spawned workers with at most two chunks
    per worker in flight (memory stays bounded whatever the number of records)."""
    if num_proc <= 1:
        _init_worker(tokenizer, spec)
        for chunk in _chunks(numbered):
            yield len(chunk), _tokenize_chunk(chunk)
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(num_proc, initializer=_init_worker, initargs=(tokenizer, spec)) as pool:
        pending: deque = deque()
        for chunk in _chunks(numbered):
            pending.append((len(chunk), pool.apply_async(_tokenize_chunk, (chunk,))))
            if len(pending) >= 2 * num_proc:
                n, result = pending.popleft()
                yield n, result.get()
        while pending:
            n, result = pending.popleft()
            yield n, result.get()


def store_path(source: Source, tokenizer: Any, spec: StoreSpec) -> Path:
    """Where the store of `source` under `spec` and `tokenizer` lives."""
    key = cache_key(data=data_digest(source), tokenizer=tokenizer_fingerprint(tokenizer), **spec.key_parts())
    return cache_dir(source, "tokens") / f"tokens-{key}"


def open_store(path: Path) -> TokenStore | None:
    """The finished store at `path`, or None when there is none (or it cannot be read)."""
    if not (path / META_FILE).is_file():
        return None
    try:
        return TokenStore(path)
    except (OSError, ValueError, pa.ArrowException):
        return None


def build_token_store(
    source: Source,
    tokenizer: Any,
    spec: StoreSpec,
    *,
    rejects_path: str | os.PathLike | None = None,
    num_proc: int = 1,
    progress: bool = True,
    rebuild: bool = False,
) -> tuple[TokenStore, bool]:
    """The token store of `source` under `spec`: (store, hit). Built when missing (or `rebuild`)."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; responses must end with one")
    if (warning := template_warning(spec.view.template, tokenizer)) is not None:
        logging.getLogger("personalign").warning(warning)
    path = store_path(source, tokenizer, spec)
    if not rebuild and (found := open_store(path)) is not None:
        return found, True
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_name(f"{path.name}.lock"))):  # one builder per store; the others wait
        if not rebuild and (found := open_store(path)) is not None:
            return found, True
        partial = path.with_name(f"{path.name}.partial")
        if rebuild:
            shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(exist_ok=True)
        counts = _write_store(source, tokenizer, spec, partial, rejects_path, num_proc, progress)
        if counts.records == 0:
            shutil.rmtree(partial, ignore_errors=True)
            why = f" ({counts.rejected} invalid, skipped)" if counts.rejected else ""
            raise EmptyError(f"no records to tokenize{why}", file=str(source))
        write_json(partial / META_FILE, {"version": STORE_VERSION, "source": str(source),
                                         "tokenizer": tokenizer_fingerprint(tokenizer), "spec": spec.key_parts(),
                                         "counts": counts.summary()})
        shutil.rmtree(path, ignore_errors=True)
        os.replace(partial, path)
    return TokenStore(path), False


def load_store(source: Source, spec: StoreSpec, tokenizer: Any, *, num_proc: int = 1, progress: bool = True
               ) -> tuple[TokenStore, bool]:
    """`build_token_store` with the rejects of `on_invalid: skip` in the default rejects file beside the data."""
    rejects = default_rejects_path(source) if spec.on_invalid == "skip" else None
    return build_token_store(source, tokenizer, spec, rejects_path=rejects, num_proc=num_proc, progress=progress)


def _write_store(source: Source, tokenizer: Any, spec: StoreSpec, out: Path, rejects_path, num_proc: int,
                 progress: bool) -> StoreCounts:
    """Tokenize the records into part files under `out`, resuming after the parts already there; the
    counts of the whole build (each part's own, and the reader's over every record)."""
    read = ReadCounts()
    done = _finished_parts(out)
    examples = itertools.islice(read_examples(source, on_invalid=spec.on_invalid, rejects_path=rejects_path,
                                              counts=read, columns=spec.columns), spec.limit)
    numbered = itertools.islice(enumerate(examples), len(done) * _PART, None)  # re-read, not re-tokenized
    total = record_count(source)
    if total is not None and spec.limit is not None:
        total = min(total, spec.limit)
    bar = work_progress(total_known=total is not None, enabled=progress, extra=(TextColumn("{task.fields[rate]}"),))
    with bar:
        task = bar.add_task("tokenizing", total=total, rate="")
        tokens = sum(d["counts"]["tokens"] for d in done)
        part = _Part(out, len(done))
        for n, (rows, rendered, rejects) in _tokenized_chunks(numbered, tokenizer, spec, num_proc):
            if rejects and spec.on_invalid == "fail":
                bad = rejects[0]
                file, line = _where(bad["source"])
                raise RecordError(file, line, bad["field"], bad["error"])
            part.add(rows, rendered, rejects, n)
            tokens += sum(r["packed_length"] for r in rows)
            if part.examples >= _PART:
                done.append(part.close())
                part = _Part(out, len(done))
            bar.update(task, completed=sum(d["counts"]["records"] for d in done) + part.counts.records,
                       rate=f"{tokens:,} tokens")
        if part.examples or not done:
            done.append(part.close())
    return _total(done, read, rejects_path)


class _Part:
    """One part file being written: its rows in record batches, its counts, its late rejects."""

    def __init__(self, out: Path, number: int):
        self.path = out / f"part-{number:05d}.arrow"
        self.tmp = self.path.with_suffix(".arrow.tmp")
        self.sink = pa.OSFile(str(self.tmp), "wb")
        self.writer = pa.ipc.new_file(self.sink, SCHEMA)
        self.counts, self.view, self.rejects, self.examples, self.buffer = StoreCounts(), ViewCounts(), [], 0, []

    def add(self, rows: list[dict], rendered: list[Rendered], rejects: list[dict], examples: int) -> None:
        for row, r in zip(rows, rendered):
            _count(self.counts, self.view, row, r)
        self.rejects += rejects
        self.examples += examples
        self.buffer += rows
        if len(self.buffer) >= _WRITE_BATCH:
            self._flush()

    def _flush(self) -> None:
        if self.buffer:
            self.writer.write_batch(pa.RecordBatch.from_pylist(self.buffer, schema=SCHEMA))
            self.buffer = []

    def close(self) -> dict:
        """Write the part's rows, then its counts (a part without counts is not finished)."""
        self._flush()
        self.writer.close()
        self.sink.close()
        os.replace(self.tmp, self.path)
        done = {"examples": self.examples, "counts": asdict(self.counts), "view": asdict(self.view),
                "rejects": self.rejects}
        write_json(self.path.with_suffix(".json"), done)
        return done


def _finished_parts(out: Path) -> list[dict]:
    """The parts a killed build finished, in order (each with its counts); anything after the first
    unfinished one is deleted."""
    done = []
    for number in itertools.count():
        part = out / f"part-{number:05d}.arrow"
        if not (part.is_file() and part.with_suffix(".json").is_file()):
            break
        try:
            meta = read_json_object(part.with_suffix(".json"))
        except UserError:  # a torn counts file: the part is built again
            break
        if meta.get("examples") != _PART:
            break
        done.append(meta)
    for stale in out.iterdir():
        if stale.name.startswith("part-") and int(stale.name[5:10]) >= len(done):
            stale.unlink()
    return done


def _total(parts: list[dict], read: ReadCounts, rejects_path) -> StoreCounts:
    """The counts of a whole build: the parts' counts summed, the reader's rejects, the late rejects."""
    counts, view = StoreCounts(), ViewCounts()
    for part in parts:
        for name, value in part["counts"].items():
            if isinstance(value, int):
                setattr(counts, name, getattr(counts, name) + value)
        for name, value in part["view"].items():
            setattr(view, name, getattr(view, name) + value)
    late_rejects = [r for part in parts for r in part["rejects"]]
    if late_rejects and rejects_path is not None:
        _append_rejects(Path(rejects_path), late_rejects)
    counts.rejected = read.rejected + len(late_rejects)
    by_field = dict(read.by_field)
    for r in late_rejects:
        by_field[r["field"]] = by_field.get(r["field"], 0) + 1
    counts.rejected_by_field = by_field
    counts.view = view.summary()
    return counts


def _count(counts: StoreCounts, view: ViewCounts, row: dict, r: Rendered) -> None:
    counts.records += 1
    prompt = len(row["prompt_ids"])
    counts.prompt_tokens += prompt
    counts.response_tokens += row["packed_length"] - prompt
    counts.tokens += row["packed_length"]
    counts.truncated_for_length += bool(row["prompt_cut"] or row["response_cut"])
    counts.responses_cut += bool(row["response_cut"])
    view.add(r)


def _append_rejects(path: Path, rejects: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for r in rejects:
            file, line = _where(r["source"])
            f.write(json.dumps({"file": file, "line": line, "field": r["field"], "error": r["error"], "raw": None},
                               ensure_ascii=False) + "\n")

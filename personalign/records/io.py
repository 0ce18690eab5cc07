"""Readers and writers for preference records: JSONL, JSON arrays, Parquet, HF datasets.

Every reader is a generator, so memory stays bounded by the largest single record (a JSON-array
file is the one exception: it is read whole). Per-record problems are yielded as `RecordError`
values so a caller may skip them; problems that stop the whole source (an empty file, a JSON
array in a .jsonl file, broken array syntax, a dataset that cannot be opened) are raised.

Positions: `line` is the 1-based line for JSONL and JSON files (for a JSON array, the line where
the element starts) and the 1-based row for Parquet files and datasets.
"""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from personalign.errors import EmptyError, OutputError, UserError
from personalign.files import atomic_write, cache_key, check_output_file, personalign_home
from personalign.records.errors import RecordError
from personalign.records.schema import (
    CHOSEN,
    DEMOGRAPHIC,
    DIRECTION,
    GOLD_PERSONA,
    PAIRS,
    PERSONA_KEYS,
    PROFILE,
    PROMPT,
    REJECTED,
    RESPONSES,
    REWARDS,
    UGC,
    Example,
)
from personalign.records.validate import to_example, to_record

Source = str | os.PathLike  # a path or hub name; readers also take a `datasets.Dataset` or an iterable of dicts
MEMORY = "<memory>"  # the `file` of records given from Python
OnInvalid = Literal["fail", "skip"]

JSONL_SUFFIXES = (".jsonl", ".ndjson")
RECORD_SUFFIXES = (*JSONL_SUFFIXES, ".json", ".parquet")  # record files by extension
_loads = orjson.loads
_decode_at = json.JSONDecoder().raw_decode
_WS = re.compile(r"[ \t\n\r]*")
_BYTES_WS = re.compile(rb"(?:\xef\xbb\xbf)?[ \t\n\r]*")
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?(:[^:/\\]*)?(:[\w.-]*)?$")  # name[:config]:split
_ROW_BATCH = 1024
_CHUNK = 1 << 20


@dataclass(slots=True)
class RawRecord:
    """One record as read: where it is, its verbatim text (None for table rows) and the parsed
    object, or the `RecordError` that stopped it from parsing into a JSON object."""

    file: str
    line: int
    raw: str | None
    value: dict[str, Any] | RecordError


@dataclass(slots=True)
class ReadCounts:
    """Outcome of a read: accepted + rejected == records seen."""

    accepted: int = 0
    rejected: int = 0
    by_field: Counter = field(default_factory=Counter)

    @property
    def seen(self) -> int:
        return self.accepted + self.rejected


# ---------------------------------------------------------------------------------------- reading


def is_path_source(source: Any) -> bool:
    """True for a path or hub name; False for records given from Python (a Dataset, an iterable)."""
    return isinstance(source, (str, os.PathLike))


def iter_raw(source: Source | Iterable[dict]) -> Iterator[RawRecord]:
    """Raw records of a .jsonl/.ndjson, .json, .parquet file, a `save_to_disk` directory
    (`dir` or `dir:split`), a hub dataset `name[:split]` or `name:config:split` (streamed; split
    defaults to train; the config name may hold spaces), a `datasets.Dataset` or an iterable of dicts."""
    if not is_path_source(source):
        return _iter_memory(source)
    text = os.fspath(source)
    path = Path(text)
    if path.is_dir():
        return _iter_dataset_dir(path, None)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in JSONL_SUFFIXES:
            return _iter_jsonl(path, text)
        if suffix == ".json":
            return _iter_json(path, text)
        if suffix == ".parquet":
            return _iter_parquet(path, text)
        raise RecordError(text, None, None, f"unsupported file type '{path.suffix}': expected .jsonl, .json, "
                          ".parquet or a directory saved with datasets' save_to_disk")
    head, sep, split = text.rpartition(":")
    if sep and split and Path(head).is_dir():
        return _iter_dataset_dir(Path(head), split)
    if path.suffix.lower() in RECORD_SUFFIXES or not _HUB_NAME.match(text):
        raise FileNotFoundError(f"no such file or directory: {text}")
    return _iter_hub(text)


def check_source(source: Source, *, option: str = "--data") -> None:
    """Fail now, before any model loads, when `source` is a local path that cannot be read as records:
    missing, an unsupported file type, or empty. Hub dataset names and in-memory records pass."""
    if not is_path_source(source):
        return
    text = os.fspath(source)
    path = Path(text)
    if not path.exists() and not Path(text.rpartition(":")[0]).is_dir() and _HUB_NAME.match(text) \
            and path.suffix.lower() not in RECORD_SUFFIXES:
        return
    try:
        first = next(iter(iter_raw(source)), None)
    except FileNotFoundError:
        raise UserError("no such file or directory", file=text, option=option) from None
    except IsADirectoryError:
        raise UserError("expected a records file or a save_to_disk directory", file=text, option=option) from None
    if first is None:
        raise EmptyError("no records", file=text, option=option)


def with_record_files(settings: dict[str, Any], keys: tuple[str, ...] = ("data", "eval_data")) -> dict[str, Any]:
    """`settings` with each of `keys` that holds records in memory (a `datasets.Dataset`, a list of
    dicts) written to a file (`records_file`), so a config can name it."""
    return {k: records_file(v) if k in keys and v is not None and not is_path_source(v) else v
            for k, v in settings.items()}


def check_io(source: Source, *outputs: tuple[str | os.PathLike | None, str], inputs: Iterable = ()) -> None:
    """`source` holds records, and no output file (path, option) would overwrite an input (`source`,
    `inputs`, an earlier output) or fail to be written; a None path is skipped."""
    check_source(source)
    written: list = []
    for path, option in outputs:
        if path is not None:
            check_output_file(path, inputs=[source if is_path_source(source) else None, *inputs, *written],
                              option=option)
            written.append(path)


def _iter_jsonl(path: Path, file: str) -> Iterator[RawRecord]:
    content = False
    with open(path, "rb") as f:
        for n, b in enumerate(f, 1):
            if b.isspace():
                continue
            try:
                s = b.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raw = b.decode("utf-8", "surrogateescape").rstrip("\r\n")
                msg = f"not valid UTF-8: byte 0x{b[e.start]:02x} at byte {e.start + 1} of the line"
                yield RawRecord(file, n, raw, RecordError(file, n, None, msg, raw))
                content = True
                continue
            raw = s[:-2] if s.endswith("\r\n") else s[:-1] if s.endswith("\n") else s
            try:
                value = _loads(b)
            except orjson.JSONDecodeError:
                value = _slow_parse(s, b, file, n, raw, first=not content)
            if type(value) is not dict and type(value) is not RecordError:
                hint = "; is the file a JSON array? name it .json" if not content and type(value) is list else ""
                value = RecordError(file, n, None, f"expected a JSON object on each line, got {_json_kind(value)}{hint}", raw)
            content = True
            yield RawRecord(file, n, raw, value)
    if not content:
        raise RecordError(file, None, None, "file is empty" + (" (only blank lines)" if path.stat().st_size else ""))


def _slow_parse(s: str, b: bytes, file: str, n: int, raw: str, *, first: bool) -> Any:
    """Re-parse a line orjson refused with the standard library: it accepts what orjson does not
    (NaN, lone surrogates) and gives the precise message for what is really broken."""
    try:
        return json.loads(s)
    except json.JSONDecodeError as e:
        if first and s.lstrip().startswith("["):
            raise RecordError(file, n, None, "this file holds a JSON array spanning several lines, "
                              "not one JSON object per line; name it .json to read it as a JSON array") from None
        msg = f"invalid JSON: {e.msg} (column {e.colno})"
        if not b.endswith(b"\n"):
            msg += "; the last line has no final newline, so the file looks truncated"
        return RecordError(file, n, None, msg, raw)


def _iter_json(path: Path, file: str) -> Iterator[RawRecord]:
    data = path.read_bytes()
    start = _BYTES_WS.match(data).end()
    if start == len(data):
        raise RecordError(file, None, None, "file is empty")
    if data[start:start + 1] == b"{":  # JSON Lines under a .json name
        del data
        yield from _iter_jsonl(path, file)
        return
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise RecordError(file, line, None, f"not valid UTF-8: byte 0x{data[e.start]:02x}; a JSON file "
                          "must be valid UTF-8 throughout") from None
    del data
    idx = _WS.match(text).end()
    if text[idx] != "[":
        raise RecordError(file, text.count("\n", 0, idx) + 1, None, "expected a JSON array of objects "
                          f"(or one object per line), got {text[idx]!r}")
    line, counted = 1, 0

    def line_at(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    idx = _WS.match(text, idx + 1).end()
    if text.startswith("]", idx):
        raise RecordError(file, line_at(idx), None, "file is empty (an empty JSON array)")
    element = 0
    while True:
        line += text.count("\n", counted, idx)
        counted = idx
        element += 1
        try:
            value, end = _decode_at(text, idx)
        except json.JSONDecodeError as e:
            truncated = not text[e.pos:].strip()
            why = "; the file looks truncated" if truncated else "; the rest of the array cannot be read"
            raise RecordError(file, e.lineno, None, f"invalid JSON in array element {element}: {e.msg} "
                              f"(line {e.lineno}, column {e.colno}){why}") from None
        raw = text[idx:end]
        if type(value) is not dict:
            value = RecordError(file, line, None, f"expected a JSON object as array element {element}, "
                                f"got {_json_kind(value)}", raw)
        yield RawRecord(file, line, raw, value)
        idx = _WS.match(text, end).end()
        if idx >= len(text):
            raise RecordError(file, line_at(idx), None, "the JSON array is not closed with ']': the file looks truncated")
        if text[idx] == "]":
            rest = _WS.match(text, idx + 1).end()
            if rest < len(text):
                raise RecordError(file, line_at(rest), None, "unexpected data after the end of the JSON array")
            return
        if text[idx] != ",":
            raise RecordError(file, line_at(idx), None, f"invalid JSON: expected ',' or ']' after array "
                              f"element {element}, got {text[idx]!r}")
        idx = _WS.match(text, idx + 1).end()


def _iter_parquet(path: Path, file: str) -> Iterator[RawRecord]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise RecordError(file, None, None, f"not a readable Parquet file: {e}") from None
    if pf.metadata.num_rows == 0:
        raise RecordError(file, None, None, "file is empty (no rows)")
    row = 0
    with pf:
        for batch in pf.iter_batches(batch_size=_ROW_BATCH):
            for value in batch.to_pylist():
                row += 1
                yield RawRecord(file, row, None, value)


def _iter_rows(ds: Any, file: str) -> Iterator[RawRecord]:
    """Rows of a `datasets.Dataset` (arrow batches) or `IterableDataset` (plain iteration)."""
    import datasets

    if isinstance(ds, datasets.Dataset):
        if len(ds) == 0:
            raise RecordError(file, None, None, "dataset is empty (no rows)")
        rows: Iterable[dict] = (r for t in ds.with_format("arrow").iter(batch_size=_ROW_BATCH) for r in t.to_pylist())
    else:
        rows = ds
    n = 0
    for n, value in enumerate(rows, 1):
        yield RawRecord(file, n, None, value)
    if n == 0:
        raise RecordError(file, None, None, "dataset is empty (no rows)")


def _iter_memory(source: Any) -> Iterator[RawRecord]:
    import datasets

    if isinstance(source, (datasets.Dataset, datasets.IterableDataset)):
        yield from _iter_rows(source, MEMORY)
        return
    if isinstance(source, Mapping) or not isinstance(source, Iterable):
        raise TypeError(f"expected a path, a hub dataset name, a datasets.Dataset or an iterable of dicts, "
                        f"got {type(source).__name__}")
    n = 0
    for n, value in enumerate(source, 1):
        if not isinstance(value, dict):
            value = RecordError(MEMORY, n, None, f"expected a dict, got {_json_kind(value)}")
        yield RawRecord(MEMORY, n, None, value)
    if n == 0:
        raise RecordError(MEMORY, None, None, "no records")


def _iter_dataset_dir(path: Path, split: str | None) -> Iterator[RawRecord]:
    import datasets

    label = os.fspath(path)
    try:
        ds = datasets.load_from_disk(label)
    except FileNotFoundError as e:
        raise RecordError(label, None, None, f"not a dataset directory written by save_to_disk: {e}") from None
    if isinstance(ds, datasets.DatasetDict):
        if split is not None:
            if split not in ds:
                raise RecordError(label, None, None, f"no split '{split}'; the dataset has {', '.join(ds)}")
            yield from _iter_rows(ds[split], f"{label}:{split}")
            return
        for name, part in ds.items():
            yield from _iter_rows(part, f"{label}:{name}")
        return
    if split is not None:
        raise RecordError(label, None, None, f"split '{split}' requested, but the directory holds a single dataset")
    yield from _iter_rows(ds, label)


def _iter_hub(source: str) -> Iterator[RawRecord]:
    import datasets

    name, config, split = hub_parts(source)
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=True)
    except (OSError, ValueError) as e:  # ConnectionError, DatasetNotFoundError, bad split, ...
        what = f"config '{config}', split '{split}'" if config else f"split '{split}'"
        raise FileNotFoundError(f"{source!r} is not a local file or directory, and loading it from the "
                                f"Hugging Face Hub ({what}) failed: {e}") from None
    yield from _iter_rows(ds, ":".join(p for p in (name, config, split) if p))


def hub_parts(source: str) -> tuple[str, str | None, str]:
    """A hub source `name`, `name:split` or `name:config:split` as (name, config or None, split);
    the split defaults to train."""
    name, *rest = source.split(":")
    if len(rest) > 2:
        raise ValueError(f"{source!r}: expected name, name:split or name:config:split")
    config = rest[0] if len(rest) == 2 else None
    split = rest[-1] if rest else ""
    return name, config or None, split or "train"


def _json_kind(value: Any) -> str:
    names = {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


class _Rejects:
    """Incremental rejects JSONL writer; the file is replaced on open and created on first use."""

    def __init__(self, path: Path):
        self.path, self.f = path, None
        path.unlink(missing_ok=True)

    def write(self, rec: RawRecord, err: RecordError) -> None:
        if self.f is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.f = open(self.path, "w", encoding="utf-8")
        raw = rec.raw if rec.raw is not None else json.dumps(rec.value, ensure_ascii=False, default=str)
        entry = {"file": rec.file, "line": rec.line, "field": err.field, "error": err.message, "raw": raw}
        try:
            self.f.write(json.dumps(entry, ensure_ascii=False) + "\n")
        except UnicodeEncodeError:  # non-UTF-8 input kept as surrogate escapes: write them as \udcXX
            self.f.write(json.dumps(entry) + "\n")

    def close(self) -> None:
        if self.f is not None:
            self.f.close()


def read_examples(
    source: Source | Iterable[dict],
    *,
    on_invalid: OnInvalid = "fail",
    rejects_path: str | os.PathLike | None = None,
    counts: ReadCounts | None = None,
    columns: Mapping[str, str] | None = None,
) -> Iterator[Example]:
    """Stream validated Examples from `source` (see `iter_raw`), in any format of
    `personalign.records.formats`; `columns` renames fields first ({name in the source: record key}).

    on_invalid="fail" raises the first `RecordError`; "skip" drops bad records, counting them in
    `counts` and, with `rejects_path`, appending {"file", "line", "field", "error", "raw"} per
    bad record to that JSONL file (raw is the verbatim line, or the row's JSON).
    """
    if on_invalid not in ("fail", "skip"):
        raise ValueError(f"on_invalid must be 'fail' or 'skip', got {on_invalid!r}")
    if counts is None:
        counts = ReadCounts()
    skip = on_invalid == "skip"
    rejects = _Rejects(Path(rejects_path)) if skip and rejects_path is not None else None
    try:
        for rec in iter_raw(source):
            value = rec.value
            if type(value) is dict:
                raw = rec.raw
                no_booleans = raw is not None and "true" not in raw and "false" not in raw
                try:
                    ex = to_example(value, file=rec.file, line=rec.line, no_booleans=no_booleans, columns=columns)
                except RecordError as e:
                    err = e
                else:
                    counts.accepted += 1
                    yield ex
                    continue
            else:
                err = value
            counts.rejected += 1
            counts.by_field[err.field or "(whole record)"] += 1
            if not skip:
                raise err
            if rejects is not None:
                rejects.write(rec, err)
    finally:
        if rejects is not None:
            rejects.close()


def record_count(source: Any) -> int | None:
    """How many records `source` holds, when that is cheap to know (JSONL lines, Parquet and dataset
    row counts, in-memory lists); None otherwise (hub streams, JSON arrays, generators)."""
    if isinstance(source, (list, tuple)):
        return len(source)
    if not is_path_source(source):
        return len(source) if hasattr(source, "__len__") else None
    path = Path(source)
    try:
        if path.is_file() and path.suffix.lower() in JSONL_SUFFIXES:
            n, last = 0, b"\n"
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    n += chunk.count(b"\n")
                    last = chunk[-1:]
            return n + (last != b"\n")  # blank lines count too: a total for the bar, not a record count
        if path.is_file() and path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
    except OSError:
        return None
    return None


def records_file(records: Iterable[dict], kind: str = "inputs") -> str:
    """In-memory records (a `datasets.Dataset`, a list, any iterable of dicts) written once to a JSONL
    file under the personalign home, named by their content, so that token stores and caches key on them."""

    def lines() -> Iterator[str]:
        for rec in iter_raw(records):
            if isinstance(rec.value, RecordError):
                raise rec.value
            yield json.dumps(rec.value, ensure_ascii=False, default=str) + "\n"

    text = "".join(lines())
    path = personalign_home() / kind / f"{cache_key(text=text)}.jsonl"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return os.fspath(path)


def default_rejects_path(source: Source) -> Path:
    """FILE stem + .rejects.jsonl next to a local input; in the cwd for hub names and in-memory records."""
    if not is_path_source(source):
        return Path.cwd() / "memory.rejects.jsonl"
    text = os.fspath(source)
    path = Path(text)
    if path.exists():
        return path.with_name((path.stem if path.is_file() else path.name) + ".rejects.jsonl")
    head, sep, split = text.rpartition(":")
    if sep and Path(head).is_dir():
        return Path(head).with_name(f"{Path(head).name}.{split}.rejects.jsonl")
    return Path.cwd() / (re.sub(r"[/:]", "__", text) + ".rejects.jsonl")


def validate_file(
    source: Source,
    *,
    on_invalid: OnInvalid = "fail",
    rejects_path: str | os.PathLike | None = None,
    progress: Callable[[ReadCounts], None] | None = None,
    every: int = 1000,
) -> ReadCounts:
    """Read and validate every record of `source`; `progress(counts)` is called every `every` records."""
    counts = ReadCounts()
    last = 0
    for _ in read_examples(source, on_invalid=on_invalid, rejects_path=rejects_path, counts=counts):
        if progress is not None and counts.seen - last >= every:
            last = counts.seen
            progress(counts)
    if progress is not None:
        progress(counts)
    return counts


# ---------------------------------------------------------------------------------------- writing


def write_jsonl(records: Iterable[dict], path: str | os.PathLike) -> int:
    """Write one JSON object per line (UTF-8, non-ASCII kept); returns the number written."""

    def write(tmp: Path) -> int:
        n = 0
        with open(tmp, "w", encoding="utf-8") as f:
            for n, rec in enumerate(records, 1):
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        return n

    return atomic_write(path, write)


def write_json_array(records: Iterable[dict], path: str | os.PathLike) -> int:
    """Write a JSON array, one element per line, streaming; returns the number written."""

    def write(tmp: Path) -> int:
        n = 0
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("[")
            for n, rec in enumerate(records, 1):
                f.write(("\n" if n == 1 else ",\n") + json.dumps(rec, ensure_ascii=False))
            f.write("\n]\n")
        return n

    return atomic_write(path, write)


def _known_types() -> dict[str, Any]:
    import pyarrow as pa

    s, vec = pa.string(), pa.list_(pa.float64())
    texts = [PROMPT, CHOSEN, REJECTED, DEMOGRAPHIC, GOLD_PERSONA, PROFILE, *PERSONA_KEYS]
    texts += [a for aliases in PERSONA_KEYS.values() for a in aliases]
    return {
        **{k: s for k in texts},
        DIRECTION: vec,
        UGC: pa.list_(pa.struct([("prompt", s), ("comment", s), (DIRECTION, vec)])),
        PAIRS: pa.list_(pa.struct([("prompt", s), ("chosen", s), ("rejected", s), (DIRECTION, vec)])),
        RESPONSES: pa.list_(s),
        REWARDS: pa.list_(pa.float64()),
    }


def _batch_table(batch: list[dict], schema: Any, known: dict[str, Any]) -> Any:
    """An arrow table for `batch` whose schema extends `schema` (None at first) with new columns and
    promoted types; known AlignX keys start from their canonical types."""
    import pyarrow as pa

    keys = dict.fromkeys(schema.names if schema is not None else ())
    for rec in batch:
        keys.update(dict.fromkeys(rec))
    fields, arrays = [], []
    for key in keys:
        values = [rec.get(key) for rec in batch]
        try:
            arr = pa.array(values)
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as e:
            raise ValueError(f"column '{key}': values of mixed or unsupported types cannot be written "
                             f"to Parquet: {e}") from None
        base = schema.field(key).type if schema is not None and key in schema.names else known.get(key)
        typ = arr.type
        if base is not None and base != typ:
            try:
                typ = pa.unify_schemas([pa.schema([(key, base)]), pa.schema([(key, typ)])],
                                       promote_options="permissive").field(key).type
            except (pa.ArrowException, TypeError) as e:
                raise ValueError(f"column '{key}': {typ} values do not fit the column type {base}: {e}") from None
        if typ != arr.type:
            arr = arr.cast(typ)
        fields.append(pa.field(key, typ))
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _conform(table: Any, schema: Any) -> Any:
    """`table` with `schema`'s columns, in order: missing ones as nulls, others cast."""
    import pyarrow as pa

    cols = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(cols, schema=schema)


def write_parquet(records: Iterable[dict], path: str | os.PathLike, batch_size: int = 1000) -> int:
    """Stream records to Parquet in batches; returns the number written.

    The schema is inferred from the first batch (AlignX keys get canonical types) and widened
    when a later batch brings a new key or needs a wider type: the rows written so far are then
    rewritten once, batch by batch, with null-filled new columns. Missing keys are written as null.
    """
    import pyarrow.parquet as pq

    known = _known_types()

    def write(tmp: Path) -> int:
        other = tmp.with_name(tmp.name + ".widen")
        writer, schema, cur, n = None, None, tmp, 0
        try:
            for batch in _batched(records, batch_size):
                table = _batch_table(batch, schema, known)
                if writer is None:
                    writer = pq.ParquetWriter(cur, table.schema)
                elif not table.schema.equals(schema):
                    writer.close()
                    nxt = other if cur == tmp else tmp
                    writer = _copy_widened(cur, nxt, table.schema)
                    cur.unlink()
                    cur = nxt
                schema = table.schema
                writer.write_table(table)
                n += len(batch)
            if writer is None:
                raise ValueError(f"{path}: no records to write (a Parquet file needs at least one row)")
            writer.close()
            if cur != tmp:
                os.replace(cur, tmp)
        finally:
            if writer is not None:
                writer.close()
            other.unlink(missing_ok=True)
        return n

    return atomic_write(path, write)


def _copy_widened(src: Path, dst: Path, schema: Any) -> Any:
    """A ParquetWriter on `dst` (with `schema`) that already holds every row of `src`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = pq.ParquetWriter(dst, schema)
    try:
        with pq.ParquetFile(src) as pf:
            for batch in pf.iter_batches(batch_size=_ROW_BATCH):
                writer.write_table(_conform(pa.Table.from_batches([batch]), schema))
    except BaseException:
        writer.close()
        raise
    return writer


def _batched(items: Iterable[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_examples(examples: Iterable[Example], path: str | os.PathLike) -> int:
    """Write Examples as records (`to_record`), format by extension (`record_writer`)."""
    return write_records(map(to_record, examples), path)


def record_writer(path: str | os.PathLike, *, option: str = "--out") -> Callable[[Iterable[dict], str | os.PathLike], int]:
    """The writer of record dicts for `path`'s extension (.jsonl/.ndjson, .json, .parquet)."""
    suffix = Path(path).suffix.lower()
    writer = write_jsonl if suffix in JSONL_SUFFIXES else {".json": write_json_array, ".parquet": write_parquet}.get(suffix)
    if writer is None:
        raise OutputError(f"cannot write '{suffix}' files; use .jsonl, .json or .parquet", file=path, option=option)
    return writer


def write_records(records: Iterable[dict], path: str | os.PathLike) -> int:
    """Write record dicts, format by extension (`record_writer`); returns the count."""
    return record_writer(path)(records, path)

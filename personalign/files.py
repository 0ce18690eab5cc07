"""Outputs that never cost data: checked before any work, written atomically, never over an input.

* `check_output_file` / `check_output_dir` run before a command loads a model or reads its data:
  an output that resolves to an input, lies under a regular file or in an unwritable directory,
  or (for directories) holds files that are not the command's own earlier output, is refused
  with an `OutputError`.
* `atomic_write`, `write_text`, `write_json` and `atomic_dir` write to a temporary sibling and
  rename it into place only when complete, so a crash never leaves a half-written result where a
  complete one is expected.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from personalign.errors import CorruptFileError, OutputError

T = TypeVar("T")
PathLike = str | os.PathLike
log = logging.getLogger("personalign")


def _existing_paths(inputs: Iterable[PathLike | None]) -> list[Path]:
    """The inputs that are local files or directories, resolved (hub names and None are skipped)."""
    return [p.resolve() for item in inputs if item is not None and (p := Path(item).expanduser()).exists()]


def _what(src: Path) -> str:
    return f"the input {src}" if src.exists() else f"{src}, another output of this command"


def _check_parent(path: Path, option: str) -> None:
    """The nearest existing ancestor of `path` must be a writable directory."""
    ancestor = path.parent
    while not ancestor.exists():
        if ancestor.is_symlink():
            raise OutputError(f"output path goes through a broken link {ancestor}", file=path, option=option)
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"cannot write under {ancestor}: it is a file, not a directory", file=path)
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"directory {ancestor} is not writable", file=path)


def check_output_file(path: PathLike, *, inputs: Iterable[PathLike | None] = (), option: str = "--out") -> Path:
    """Refuse an output file that is an input, a directory, or cannot be created; returns the path."""
    out = Path(path).expanduser()
    if out.is_dir():
        raise OutputError(f"{option} is a directory; expected a file name", file=out)
    resolved = out.resolve()
    for src in (Path(i).expanduser().resolve() for i in inputs if i is not None):
        if resolved == src:
            raise OutputError(f"{option} would overwrite {_what(src)}; choose another output", file=out)
    if out.exists() and not os.access(out, os.W_OK):
        raise OutputError("output file is not writable", file=out)
    _check_parent(resolved, option)
    return out


def check_output_dir(path: PathLike, *, inputs: Iterable[PathLike | None] = (), own: Iterable[str] = (),
                     overwrite: bool = False, option: str = "--out") -> Path:
    """Refuse an output directory that is a file, cannot be created, holds an input this command
    would overwrite, or holds files that are not this command's own output (`own`: glob patterns of
    the top-level names it writes), unless `overwrite`; returns the path."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise OutputError(f"{option} is a file; expected a directory", file=out)
    resolved = out.resolve()
    own = tuple(own)
    for src in _existing_paths(inputs):
        if resolved == src:
            raise OutputError(f"{option} would overwrite the input {src}; choose another directory", file=out)
        if resolved in src.parents and _matches(src.relative_to(resolved).parts[0], own):
            raise OutputError(f"{option} holds the input {src}, which this command may overwrite; choose another "
                              "directory", file=out)
    if out.is_dir():
        if not os.access(out, os.W_OK | os.X_OK):
            raise OutputError("output directory is not writable", file=out)
        foreign = sorted(p.name for p in out.iterdir() if not _matches(p.name, own))
        if foreign and not overwrite:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            how = "overwrite_output_dir=true" if option == "output_dir" else "--overwrite"
            raise OutputError(f"{option} holds files this command did not write ({shown}); pass {how} "
                              "or choose an empty directory", file=out)
    else:
        _check_parent(resolved, option)
    return out


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def atomic_write(path: PathLike, write: Callable[[Path], T]) -> T:
    """Call `write(tmp)` on a temporary sibling of `path`, then move it into place; returns its result."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        result = write(tmp)
        if path.exists():
            shutil.copymode(path, tmp)
        else:
            tmp.chmod(0o666 & ~_umask())
        os.replace(tmp, path)
        return result
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: PathLike, text: str) -> Path:
    """Write UTF-8 text atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return Path(path)


def write_bytes(path: PathLike, data: bytes) -> Path:
    """Write bytes atomically."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return Path(path)


def write_json(path: PathLike, obj: Any, *, indent: int = 2) -> Path:
    """Write one JSON document atomically (UTF-8, non-ASCII kept, trailing newline)."""
    return write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + "\n")


@contextmanager
def atomic_dir(path: PathLike) -> Iterator[Path]:
    """Build a directory in a temporary sibling; on success it replaces `path` whole (never merged)."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    tmp.chmod(0o777 & ~_umask())
    try:
        yield tmp
        stale = None
        if final.exists():
            stale = final.with_name(f"{tmp.name}.old")
            final.rename(stale)
        tmp.rename(final)
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_json_object(path: PathLike) -> dict:
    """A JSON object from `path`; unreadable, truncated or not an object is a `CorruptFileError`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CorruptFileError(f"cannot read {path.name} ({e})", file=path) from None
    if not isinstance(data, dict):
        raise CorruptFileError(f"{path.name} is not a JSON object", file=path)
    return data


def discard_corrupt(path: PathLike, why: str) -> None:
    """Warn that the cache entry `path` cannot be read and delete it, so it is recomputed."""
    log.warning("cache entry %s cannot be read (%s); deleted, recomputing it", path, why)
    Path(path).unlink(missing_ok=True)


HOME_ENV = "PERSONALIGN_HOME"
CACHE_DIRNAME = ".personalign-cache"
_CHUNK = 1 << 20


def personalign_home() -> Path:
    """Cache home: `$PERSONALIGN_HOME`, else `~/.cache/personalign`."""
    env = os.environ.get(HOME_ENV)
    return Path(env).expanduser().resolve() if env else Path.home() / ".cache" / "personalign"


def data_digest(source: PathLike) -> str:
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


def cache_dir(source: PathLike, kind: str) -> Path:
    """`.personalign-cache` beside the data when writable, else `<home>/cache/<kind>`."""
    path = Path(source)
    parent = path.parent if path.is_file() else path if path.is_dir() else None
    if parent is not None and os.access(parent, os.W_OK):
        return parent / CACHE_DIRNAME
    return personalign_home() / "cache" / kind

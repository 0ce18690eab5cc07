"""The 90 AlignX preference dimensions (phrase for value 1 and for value 0, in vector order).

The table ships inside the package (`personalign/resources/alignx_dimensions.json`, a copy of the
AlignX release's table), so a wheel installed anywhere has it; an explicit path or the
`PERSONALIGN_DIMENSIONS` environment variable overrides it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from personalign.errors import UserError
from personalign.records.schema import N_DIMENSIONS

FILENAME = "alignx_dimensions.json"
ENV_VAR = "PERSONALIGN_DIMENSIONS"


@dataclass(frozen=True, slots=True)
class Dimension:
    index: int
    group: str
    positive: str
    negative: str


def shared_data_dir() -> Path | None:
    """`shared/data` beside the repository (or beside any parent of the cwd), if present."""
    starts = [Path(__file__).resolve().parents[2], Path.cwd().resolve()]
    for start in starts:
        for parent in [start, *start.parents]:
            cand = parent / "shared" / "data"
            if (cand / FILENAME).is_file():
                return cand
    return None


PACKAGED = Path(__file__).resolve().parents[1] / "resources" / FILENAME


def dimensions_path(path: str | Path | None = None) -> Path:
    """Resolve the dimension table: argument, then $PERSONALIGN_DIMENSIONS, then the packaged copy."""
    if path is None:
        path = os.environ.get(ENV_VAR)
    if path is None:
        return PACKAGED
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: dimension table not found")
    return path


@lru_cache(maxsize=4)
def load_dimensions(path: str | Path | None = None) -> tuple[Dimension, ...]:
    """Load and check the 90 dimensions in vector order."""
    p = dimensions_path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        items = data["dimensions"] if isinstance(data, dict) else data
        dims = tuple(Dimension(int(d["index"]), d.get("group", ""), d["positive"], d["negative"]) for d in items)
    except OSError as e:
        raise UserError(f"cannot read the dimension table ({e.strerror or e})", file=p, option="dimensions") from None
    except (ValueError, KeyError, TypeError) as e:
        what = f"missing field {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
        raise UserError(f"not a dimension table: expected a JSON list (or {{\"dimensions\": [...]}}) of "
                               f"{{index, positive, negative}} objects ({what})", file=p, option="dimensions") from None
    if len(dims) != N_DIMENSIONS or [d.index for d in dims] != list(range(N_DIMENSIONS)):
        raise UserError(f"expected dimensions 0..{N_DIMENSIONS - 1} in order, got {len(dims)}", file=p, option="dimensions")
    return dims

"""The batcher's rounds: the batch with the fewest tokens left first, and none waits past `patience`."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from personalign.serve.batching import Batcher, _Running


def _batch(max_new_tokens: int, steps: int = 0) -> _Running:
    decoding = SimpleNamespace(config=SimpleNamespace(max_new_tokens=max_new_tokens), steps=steps)
    return _Running([], decoding)  # type: ignore[arg-type]


def test_the_shortest_budget_goes_first_and_a_long_one_keeps_a_steady_share():
    batcher = Batcher(backend=None, patience=2)  # type: ignore[arg-type]
    long, short = _batch(2048, steps=100), _batch(32)
    advanced = []
    for _ in range(9):
        chosen = batcher._round([long, short])
        advanced.append(["long" if r is long else "short" for r in chosen])
        for r in chosen:
            r.decoding.steps += 1
    assert all("short" in names for names in advanced)
    assert [i for i, names in enumerate(advanced) if "long" in names] == [2, 5, 8]  # once in patience + 1 rounds


def test_finished_batches_are_not_advanced():
    batcher = Batcher(backend=None)  # type: ignore[arg-type]
    done, running = _batch(8), _batch(64)
    done.alive = False
    assert batcher._round([done, running]) == [running]
    assert batcher._round([done]) == []
    with pytest.raises(ValueError, match="patience"):
        Batcher(backend=None, patience=-1)  # type: ignore[arg-type]

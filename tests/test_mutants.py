"""The mutation harness (`make mutants`) stays in step with the code: every mutant's snippet occurs
exactly once in its module and names test files that exist."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_mutant_applies_and_names_existing_tests():
    spec = importlib.util.spec_from_file_location("mutants", REPO / "tools" / "mutants.py")
    mutants = importlib.util.module_from_spec(spec)
    sys.modules["mutants"] = mutants  # dataclasses look their module up there
    spec.loader.exec_module(mutants)
    assert len(mutants.MUTANTS) >= 40
    assert len({m.id for m in mutants.MUTANTS}) == len(mutants.MUTANTS)
    for m in mutants.MUTANTS:
        text = (REPO / "personalign" / m.module).read_text()
        assert text.count(m.old) == 1, f"{m.id}: snippet found {text.count(m.old)} times in {m.module}"
        assert m.old != m.new
        assert all((REPO / t).is_file() for t in m.tests), m.id
    covered = {m.module for m in mutants.MUTANTS}
    assert {"train/losses.py", "train/loop.py", "models/logprobs.py", "models/refcache.py", "metrics.py",
            "eval/alignment.py", "data/profile.py", "data/views.py", "llm/verdict.py"} <= covered

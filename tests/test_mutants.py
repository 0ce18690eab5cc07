"""The mutation harness (`make mutants`) stays in step with the code: every mutant's snippet occurs
exactly once in its module and names test files that exist."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _harness():
    spec = importlib.util.spec_from_file_location("mutants", REPO / "tools" / "mutants.py")
    mutants = importlib.util.module_from_spec(spec)
    sys.modules["mutants"] = mutants  # dataclasses look their module up there
    spec.loader.exec_module(mutants)
    return mutants


def test_every_mutant_applies_and_names_existing_tests():
    mutants = _harness()
    assert len(mutants.MUTANTS) >= 40
    assert len({m.id for m in mutants.MUTANTS}) == len(mutants.MUTANTS)
    for m in mutants.MUTANTS:
        text = (REPO / "personalign" / m.module).read_text()
        assert text.count(m.old) == 1, f"{m.id}: snippet found {text.count(m.old)} times in {m.module}"
        assert m.old != m.new
        assert all((REPO / t).is_file() for t in m.tests), m.id
    covered = {m.module for m in mutants.MUTANTS}
    assert {"train/losses.py", "train/loop.py", "models/logprobs.py", "models/refcache.py", "metrics.py",
            "eval/alignment.py", "views/profile.py", "views/build.py", "llm/verdict.py", "serve/memory.py",
            "eval/generate.py", "llm/cache.py", "train/collate.py", "models/rewards.py"} <= covered


def test_only_a_test_failure_kills_and_the_table_has_a_column_per_fate():
    mutants = _harness()
    assert [mutants.outcome(rc) for rc in (0, 1, 2, 3, 4, 5, None)] == [
        "survived", "killed", "error", "error", "error", "error", "timeout"]
    m = mutants.MUTANTS[0]
    lines = mutants.table([(m, "killed"), (m, "error"), (m, "timeout"), (m, "survived")]).splitlines()
    assert lines[0] == "| module | mutants | killed | survived | error | timeout | score |"
    assert lines[2] == f"| `{m.module}` | 4 | 1 | 1 | 1 | 1 | 25% |" and lines[3].startswith("| **all** | 4 | 1 |")


def test_the_copy_holds_untracked_files_and_leaves_ignored_ones(tmp_path):
    copied = _harness().copy_checkout(tmp_path / "repo")
    assert (copied / "personalign" / "__init__.py").is_file() and (copied / "tests" / "procs.py").is_file()
    assert not (copied / ".venv").exists() and not (copied / ".git").exists()
    assert (tmp_path / "shared" / "data").is_dir()  # the shared data sits beside the copy as beside the checkout

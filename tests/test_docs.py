"""docs/fidelity.md: every row names tests that exist, and every personalign function it names imports."""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIDELITY = (REPO / "docs" / "fidelity.md").read_text()
TESTS = sorted(set(re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", FIDELITY)))


def test_every_protocol_row_names_a_test():
    rows = [line for line in FIDELITY.splitlines() if line.startswith("| ") and not line.startswith("| protocol")]
    assert len(rows) >= 20
    for row in rows:
        assert "`tests/" in row, f"row without a pinning test: {row[:80]}"


@pytest.mark.parametrize(("path", "name"), TESTS, ids=[f"{p}::{n}" for p, n in TESTS])
def test_named_test_exists(path, name):
    tree = ast.parse((REPO / path).read_text())
    assert name in {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}, f"{path} has no {name}"


def test_named_functions_import():
    names = set(re.findall(r"`((?:data|eval|llm|models|persona|train|metrics)\.[\w.]+)", FIDELITY))
    for dotted in names:
        try:
            importlib.import_module(f"personalign.{dotted}")
            continue
        except ModuleNotFoundError:
            pass
        module, _, attr = dotted.rpartition(".")
        mod = importlib.import_module(f"personalign.{module}")
        assert hasattr(mod, attr), f"personalign.{dotted} does not exist"


ARCHITECTURE = (REPO / "docs" / "architecture.md").read_text()


def test_architecture_names_only_files_that_exist():
    paths = set(re.findall(r"`((?:[a-z_]+/)?[a-z_]+\.py)", ARCHITECTURE))
    assert len(paths) >= 20
    missing = [p for p in paths if not (REPO / "personalign" / p).is_file() and not (REPO / p).is_file()]
    assert not missing, f"docs/architecture.md names missing files: {missing}"


def test_architecture_layer_table_is_the_tested_rule():
    from test_layers import LAYERS

    rows = re.findall(r"^\| (\d+) \| (.+?) \| .+ \|$", ARCHITECTURE, flags=re.M)
    table = [tuple(name.strip("`/") for name in re.findall(r"`[^`]+`", parts)) for _, parts in rows]
    assert [set(r) for r in table] == [set(r) for r in LAYERS]

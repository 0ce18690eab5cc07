"""The layer rule (docs/architecture.md), read from the package's own imports: a module imports only
its own folder and the layers below it, and sibling stages never import each other."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import personalign

PACKAGE = Path(personalign.__file__).parent
# Bottom to top; the parts of one row are siblings and may not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "progress", "version"),
    ("files",),
    ("config", "metrics"),
    ("records",),
    ("views",),
    ("tokenstore", "curate"),
    ("memory",),
    ("models",),
    ("llm",),
    ("users",),
    ("train", "eval", "persona", "serve"),
    ("report",),
    ("quickstart",),
    ("api",),
    ("cli",),
    ("__main__",),
    ("__init__",),  # the package's face: names the Python API lazily; nothing in the package imports it
    ("testing",),  # test support: nothing in the package may import it
]
RANK = {part: (row, part) for row, parts in enumerate(LAYERS) for part in parts}


def _part(module: str) -> str:
    """The top-level part of the package a dotted module name belongs to ('personalign' itself: __init__)."""
    names = module.split(".")
    return names[1] if len(names) > 1 else "__init__"


def _module(path: Path, root: Path = PACKAGE) -> str:
    return ".".join(("personalign", *path.relative_to(root).with_suffix("").parts))


def _imports(path: Path, root: Path = PACKAGE) -> set[str]:
    """Every personalign module `path` imports, at any depth (lazy imports inside functions count)."""
    module = _module(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            found.add(base)
            if base == "personalign":  # `from personalign import errors` imports personalign.errors
                found |= {f"personalign.{a.name}" for a in node.names}
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.add(node.args[0].value)  # importlib.import_module("personalign.api") is an import too
    return {m for m in found if m == "personalign" or m.startswith("personalign.")}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def test_every_part_of_the_package_has_a_layer():
    parts = {_part(_module(p)) for p in _modules()}
    assert parts <= RANK.keys(), f"parts without a layer: {sorted(parts - RANK.keys())}"


def test_no_module_imports_a_stage_above_it_or_a_sibling():
    violations = []
    for path in _modules():
        me = _part(_module(path))
        for dep in _imports(path):
            other = _part(dep)
            if other == me or dep == "personalign":
                continue
            if RANK[other][0] >= RANK[me][0]:
                violations.append(f"{path.relative_to(PACKAGE)} imports {dep} ({other} is not below {me})")
    assert not violations, "\n".join(violations)


@pytest.mark.parametrize("source, expected", [
    ("from personalign.eval.metrics import x\n", {"personalign.eval.metrics"}),
    ("def f():\n    from personalign.persona import judge\n", {"personalign.persona"}),
    ("from personalign import errors\n", {"personalign", "personalign.errors"}),
    ("from ..persona.retrieve import f\n", {"personalign.persona.retrieve"}),
    ("import numpy\n", set()),
    ("import importlib\nimportlib.import_module('personalign.api')\n", {"personalign.api"}),
])
def test_the_import_reader_sees_every_form_of_import(tmp_path, source, expected):
    path = tmp_path / "data" / "probe.py"
    path.parent.mkdir()
    path.write_text(source, encoding="utf-8")
    assert _imports(path, root=tmp_path) == expected


def _function_lengths(path: Path) -> dict[str, int]:
    """Lines of every function (methods and nested functions too) in `path`, decorators excluded."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name: node.end_lineno - node.lineno + 1 for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_the_training_loop_and_the_server_stay_short_enough_to_hold():
    """`train()` reads top to bottom in at most 90 lines; no function of the server is over 80."""
    assert _function_lengths(PACKAGE / "train" / "loop.py")["train"] <= 90
    long = {f"{path.name}:{name}": n for path in (PACKAGE / "serve").glob("*.py")
            for name, n in _function_lengths(path).items() if n > 80}
    assert long == {}


# Inside a stage, the same rule: bottom to top, and the modules of one row never import each other.
INNER_LAYERS: dict[str, list[tuple[str, ...]]] = {
    "train": [
        ("loss_names", "sharding", "trackers"),
        ("config", "losses"),
        ("collate", "schedule", "footprint"),
        ("build", "data"),
        ("checkpoints", "objective"),
        ("run",),
        ("loop",),  # train(cfg): the recipe, read top to bottom; nothing else in train/ imports it
        ("__init__",),
    ],
    "serve": [
        ("schemas", "batching", "memory", "prompts", "views", "adapt", "ui"),
        ("replies", "streaming"),
        ("state",),
        ("openai_routes", "memory_routes"),  # routers over one ServerState
        ("app",),
        ("__init__",),
    ],
}


def _inner_imports(path: Path, stage: str) -> set[str]:
    """The modules of `stage` that `path` imports (`from personalign.train import loop` included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module == f"personalign.{stage}":
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(f"personalign.{stage}."):
            names = [node.module.split(".")[2]]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[2] for a in node.names if a.name.startswith(f"personalign.{stage}.")]
        found |= set(names)
    return found


@pytest.mark.parametrize("stage", sorted(INNER_LAYERS))
def test_inside_a_stage_modules_import_only_the_rows_below_them(stage):
    rank = {name: row for row, names in enumerate(INNER_LAYERS[stage]) for name in names}
    modules = {p.stem: p for p in (PACKAGE / stage).glob("*.py")}
    assert modules.keys() == rank.keys(), f"{stage}/ modules without a row: {sorted(modules.keys() - rank.keys())}"
    upward = [f"{stage}/{me}.py imports {dep}" for me, path in modules.items() for dep in _inner_imports(path, stage)
              if dep != me and rank[dep] >= rank[me]]
    assert upward == []

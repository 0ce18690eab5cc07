"""Every command in README.md runs as written.

The five-minute tour is extracted and run line by line, in order, from a scratch directory laid out
like a checkout (`configs/` here, `../shared/data` beside it). What it checks is that every command,
option and file hand-over works as written, so the "default model" there is a tiny random one
(prepared into a home of its own): the embedded model's own end-to-end run is the quickstart's test,
and this one would otherwise cost two minutes of the suite's seven. Commands
quoted elsewhere in the README (the command table, the paper table, `serve`) must name real
subcommands, options and config files; each of them has its own test in its folder. The two
`make` targets are what CI itself runs (`make test`) and `quickstart`, whose tiny run is
tests/report/test_quickstart.py.
"""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from personalign.cli import COMMANDS, app, load_command
from personalign.config import load_config
from personalign.train.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def _section_commands(heading: str) -> list[str]:
    """Command lines of every ```bash block in the section under `heading`."""
    section = README.split(heading, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip() and not line.startswith("#")]


def _argv(line: str) -> list[str]:
    argv = shlex.split(line, comments=True)
    assert argv[0] == "personalign", line
    return argv[1:]


def test_readme_starts_with_the_two_make_commands():
    first = re.search(r"```bash\n(.*?)```", README, re.S)
    assert README.index(first.group(0)) < README.index("\n## ")
    commands = [shlex.split(line, comments=True) for line in first.group(1).splitlines()]
    assert commands == [["make", "quickstart"], ["make", "test"]]
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^quickstart: .*\n\t\$\(BIN\)/personalign quickstart$", makefile, re.M)
    assert re.search(r"^test: .*\n\t\$\(BIN\)/python -m pytest", makefile, re.M)
    assert "make test" in (REPO / ".ci" / "run").read_text()


@pytest.fixture()
def tiny_default_home(tmp_path, monkeypatch) -> Path:
    """A personalign home whose prepared default model is a tiny random one."""
    from personalign import files
    from personalign.models import loading
    from personalign.testing import save_tiny

    home = tmp_path / "home"
    model_dir = save_tiny(home / "models" / loading.DEFAULT_MODEL)
    (model_dir / loading.MANIFEST).write_text(json.dumps({"name": loading.DEFAULT_MODEL, "source": "tiny (test)"}))
    monkeypatch.setenv(files.HOME_ENV, str(home))
    assert loading.resolve_model(None) == str(model_dir)
    return home


@pytest.mark.duration(25)
def test_the_tour_runs_as_written(tiny_default_home, shared_data, tmp_path, monkeypatch):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "configs").symlink_to(REPO / "configs")
    (tmp_path / "shared").symlink_to(shared_data.parent)
    monkeypatch.chdir(checkout)
    lines = _section_commands("## A five-minute tour")
    assert len(lines) >= 15
    runner = CliRunner()
    for line in lines:
        res = runner.invoke(app, _argv(line))
        assert res.exit_code == 0, f"{line}\n{res.output}"

    tour = checkout / "runs" / "tour"
    assert len((tour / "users.jsonl").read_text().splitlines()) == 200
    for run in ("accuracy-base", "accuracy-dpo"):
        assert json.loads((tour / run / "accuracy.json").read_text())["accuracy"]["overall"]["n"] == 4
    assert (tour / "ica-dpo-merged" / "model.safetensors").exists()
    judge = json.loads((tour / "judge" / "judge.json").read_text())
    assert judge["pairs"] == 2
    assert (tour / "diverse.jsonl").read_text().count("\n") == 50
    assert "<h2>Alignment accuracy</h2>" in (tour / "report.html").read_text()
    manifest = json.loads((tour / "subsets" / "manifest.json").read_text())
    assert [(s["k"], s["n"]) for s in manifest["subsets"]] == [(2, 50), (4, 25)]
    assert json.loads((tour / "persona-accuracy.json").read_text())["n_personas"] == 2
    assert json.loads((tour / "persona-prefer.json").read_text())["n"] == 2
    assert len((tour / "retrieved.jsonl").read_text().splitlines()) == 600


def _quoted_commands() -> list[str]:
    """`personalign ...` commands quoted inline in the README (tables and prose)."""
    spans = re.findall(r"`((?:accelerate launch[^`]*?-m )?personalign [^`]+)`", README)
    return [re.sub(r"^accelerate launch.*?-m personalign", "personalign", s) for s in spans]


def _table_rows() -> list[list[str]]:
    """(command spans, library spans) of each row of the README's command table."""
    section = README.split("## Commands", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| `")]
    return [[re.findall(r"`([^`]+)`", cells[0]), re.findall(r"`([^`]+)`", cells[-1])] for cells in rows]


def _table_commands() -> list[str]:
    """Each command of the table, `persona infer / accuracy / ...` spelled out one by one."""
    out = []
    for spans, _ in _table_rows():
        for span in spans:
            head, *alternatives = [part.strip() for part in span.split(" / ")]
            out.append(f"personalign {head}")
            out += [f"personalign {head.split()[0]} {alt}" for alt in alternatives]
    return out


def test_the_command_table_covers_every_command_and_names_real_functions():
    import importlib

    listed = {tuple(c.split()[1:3]) if c.split()[1] in GROUPS else (c.split()[1],) for c in _table_commands()}
    expected = {(name,) for name in COMMANDS if name not in GROUPS}
    expected |= {(group, sub) for group in GROUPS for sub in load_command(group).commands}
    assert expected <= listed, f"commands missing from the README table: {sorted(expected - listed)}"
    for _, functions in _table_rows():
        parent = None
        for name in functions:
            if name.startswith("."):
                name = parent.rsplit(".", 1)[0] + name
            module, _, attr = name.rpartition(".")
            try:
                importlib.import_module(name)
            except ModuleNotFoundError:
                assert hasattr(importlib.import_module(module), attr), name
            parent = name


GROUPS = {name for name, (_, attr, _) in COMMANDS.items() if attr == "app"}


@pytest.mark.parametrize("command", sorted(set(_quoted_commands() + _table_commands())))
def test_quoted_commands_name_real_subcommands_options_and_configs(command):
    words = [w for w in re.sub(r"\[|\]|\.\.\.", " ", command).split() if w]
    path = []
    for w in words[1:]:
        if w.startswith("-") or "=" in w or w.isupper() or "/" in w or not re.fullmatch(r"[a-z-]+", w):
            break
        path.append(w)
        if len(path) == 2 or path[0] not in GROUPS:
            break
    res = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, f"{command}: `personalign {' '.join(path)}` is not a command\n{res.output}"
    for opt in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", command):
        assert opt in res.output, f"{command}: {opt} is not an option of `personalign {' '.join(path)}`"
    for cfg in re.findall(r"configs/[\w.-]+\.yaml", command):
        load_config(TrainConfig, REPO / cfg)

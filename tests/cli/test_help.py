"""A CLI that explains itself: --help lists config keys, --print-config, typo suggestions naming their
source, one-line errors with exit 2, --version, a missing extra named with its pip command, and a
`personalign --help` that imports none of the heavy libraries."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

import personalign
from personalign.cli import COMMANDS, app
from personalign.config import config_reference, suggest
from personalign.errors import MissingExtraError, require_extra
from personalign.train.config import TrainConfig

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200", "PERSONALIGN_DEBUG": ""})


def test_train_help_lists_every_config_key_with_type_default_and_description():
    out = " ".join(invoke("train", "--help").output.split())
    for key, kind, default, description in config_reference(TrainConfig):
        assert f"{key} (" in out, key
    assert "learning_rate (float > 0; default 1e-06): Peak AdamW learning rate." in out
    assert "loss (dpo|kto|simpo|orpo|sft|pro|rm; default 'dpo')" in out
    assert "loss_type (sigmoid|hinge|ipo|exo_pair|" in out and "default 'sigmoid'" in out
    assert "data (str; required)" in out
    assert "model_name_or_path: alias of model" in out and "use_peft: alias of lora" in out
    assert all(description for *_, description in config_reference(TrainConfig)), "a key without a description"


def test_print_config_shows_the_merged_config(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: a.jsonl\nbeta: 0.3\nlora_r: 8\nuse_peft: true\n")
    res = invoke("train", "--config", str(cfg), "--print-config", "beta=0.5", "report_to=none")
    assert res.exit_code == 0, res.output
    merged = yaml.safe_load(res.output)
    assert merged["beta"] == 0.5 and merged["data"] == "a.jsonl" and merged["lora"]["r"] == 8
    assert merged["report_to"] == [] and TrainConfig.model_validate(merged).beta == 0.5


def test_unknown_keys_suggest_the_closest_and_name_their_source(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: a.jsonl\nlearning_rat: 1e-5\n")
    res = invoke("train", "--config", str(cfg), "--print-config", "lr=1e-5", "view.templte=chat")
    assert res.exit_code == 2
    (line,) = res.output.strip().splitlines()
    assert "learning_rat: unknown key (from the config file); did you mean 'learning_rate'?" in line
    assert "lr: unknown key (from the key=value override); did you mean 'learning_rate'?" in line
    assert "view.templte: unknown key (from the key=value override); did you mean 'view.template'?" in line
    only_cli = invoke("train", "--print-config", "data=a.jsonl", "bta=1")
    assert only_cli.output.strip() == ("error: invalid config: bta: unknown key; did you mean 'beta'? "
                                       "(key=value overrides)")
    assert suggest("gradient_acumulation_steps", list(TrainConfig.model_fields)) == "gradient_accumulation_steps"
    assert suggest("zzz", list(TrainConfig.model_fields)) is None


@pytest.mark.parametrize(("args", "needle"), [
    (["train", "data=missing.jsonl", "report_to=none"], "error: no such file or directory (data: missing.jsonl)"),
    (["train", "data=a.jsonl", "lora_r=4"], "lora_r: LoRA settings need use_peft true"),
    (["train", "data=a.jsonl", "report_to=[comet]"], "report_to.0: Input should be"),
    (["eval", "accuracy", "--data", "missing.jsonl"], "error: no such file or directory"),
    (["data", "validate", "missing.jsonl"], "error:"),
    (["train", "--config", "missing.yaml"], "error: "),
])
def test_user_errors_are_one_line_with_exit_2(args, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = invoke(*args)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.output
    assert "Traceback" not in res.output


def test_debug_adds_the_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = invoke("--debug", "train", "data=missing.jsonl", "report_to=none")
    assert res.exit_code == 2 and "Traceback" in res.output


def test_version():
    res = invoke("--version")
    assert res.exit_code == 0 and res.output.strip() == f"personalign {personalign.__version__}"


def test_root_help_lists_every_command_without_importing_them():
    code = ("import sys; from personalign.cli import app; "
            "sys.argv = ['personalign', '--help']\n"
            "try:\n    app()\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'transformers', 'peft', 'datasets', 'fastapi') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"COLUMNS": "200",
                         "PATH": "/usr/bin:/bin"}, timeout=120).stdout
    assert "HEAVY []" in out
    for name in COMMANDS:
        assert name in out


def test_every_command_help_imports_no_engine():
    """`personalign <command> [<sub>] --help` for every command and subcommand, in one fresh interpreter:
    none of them imports torch, transformers, accelerate, datasets, pyarrow or peft (timed by bench/cli_help.py)."""
    code = ("import sys\n"
            "from typer.testing import CliRunner\n"
            "from personalign.cli import COMMANDS, app, load_command\n"
            "lines = []\n"
            "for name in COMMANDS:\n"
            "    lines.append([name])\n"
            "    lines += [[name, sub] for sub in getattr(load_command(name), 'commands', {})]\n"
            "codes = [CliRunner().invoke(app, [*argv, '--help']).exit_code for argv in lines]\n"
            "heavy = [m for m in ('torch', 'transformers', 'accelerate', 'datasets', 'pyarrow', 'peft') if m in sys.modules]\n"
            "print('HELPS', len(lines), 'CODES', sorted(set(codes)), 'HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"COLUMNS": "200",
                         "PATH": "/usr/bin:/bin"}, timeout=120)
    assert "CODES [0] HEAVY []" in out.stdout, out.stdout + out.stderr
    assert int(out.stdout.split("HELPS ")[1].split()[0]) > len(COMMANDS)


def test_options_with_fixed_values_list_them(monkeypatch):
    import typer.rich_utils

    from personalign.cli import _common

    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 200)  # a console width other tests left behind never crops it
    for console in (_common.console, _common.err_console):  # rich fixes `_width` from COLUMNS when it is made
        monkeypatch.setattr(console, "_width", None)
    out = invoke("eval", "accuracy", "--help").output
    assert "none|ica|pba|persona|demo" in re.sub(r"[\s│]", "", out)  # the choices, however rich wraps the column


def test_a_missing_extra_names_the_pip_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    with pytest.raises(MissingExtraError, match=r"personalign serve needs fastapi, which is not installed: "
                       r"pip install 'personalign\[serve\]'"):
        require_extra("serve", "personalign serve")
    res = invoke("serve", "--port", "8765")
    assert res.exit_code == 2 and "pip install 'personalign[serve]'" in res.output

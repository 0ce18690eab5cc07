from __future__ import annotations

import shutil

from typer.testing import CliRunner

from personalign.cli import app
from personalign.files import HOME_ENV

runner = CliRunner()


def test_models_list_shows_default_status_and_cached_models(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.setenv(HOME_ENV, str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    shutil.copytree(tiny_model_dir, tmp_path / "models" / "my-tiny")
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0, result.output
    assert "smollm2-135m-instruct" in result.output and "not prepared" in result.output
    assert "my-tiny" in result.output and "ready" in result.output


def test_models_prepare_checks_a_local_directory(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    result = runner.invoke(app, ["models", "prepare", str(tiny_model_dir)])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output and "LlamaForCausalLM" in result.output


def test_models_prepare_missing_directory_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    result = runner.invoke(app, ["models", "prepare", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "does not exist" in result.output

"""The wheel works outside the checkout: built, installed into a fresh venv that reuses the
already-installed dependencies (no download, so CI stays fast), and run from a directory outside
the repository: `data synth`, a `pba` build (the dimension table is package data) and `eval
accuracy` on two records."""
from __future__ import annotations

import json
import os
import sys
import sysconfig
from pathlib import Path

import procs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def run(cmd: list, cwd: Path, env: dict) -> str:
    proc = procs.run([str(c) for c in cmd], cwd=cwd, env=env, timeout=600)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_the_wheel_installed_elsewhere_synthesizes_renders_pba_and_evaluates(tmp_path, tiny_model_dir):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PERSONALIGN_DIMENSIONS")}
    run([sys.executable, "-m", "pip", "wheel", REPO, "--no-deps", "--no-build-isolation", "-q", "-w",
         tmp_path / "wheels"], tmp_path, env)
    (wheel,) = (tmp_path / "wheels").glob("personalign-*.whl")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path, env)
    python = venv / "bin" / "python"
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env).strip())
    # the dependencies already installed here; a plain path entry, so this checkout's editable hook stays off
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site, wheel], tmp_path, env)

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = run([python, "-c", "import personalign, sys; print(personalign.__file__)"], outside, env)
    assert Path(where.strip()).is_relative_to(site) and not Path(where.strip()).is_relative_to(REPO)
    cli = [python, "-m", "personalign"]
    run([*cli, "data", "synth", "--n", "2", "--out", "users.jsonl"], outside, env)
    run([*cli, "data", "build-views", "users.jsonl", "--view", "pba", "--out", "pba.jsonl"], outside, env)
    rows = [json.loads(line) for line in (outside / "pba.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["view"] == "pba" for r in rows)
    table = json.loads((REPO / "personalign" / "resources" / "alignx_dimensions.json").read_text())["dimensions"]
    phrases = {d[side] for d in table for side in ("positive", "negative")}
    assert all(any(p in r["prompt"] for p in phrases) for r in rows)  # profiles written from the packaged table
    run([*cli, "eval", "accuracy", "--data", "users.jsonl", "--policy", tiny_model_dir, "--max-length", "512",
         "--out", "acc"], outside, env)
    result = json.loads((outside / "acc" / "accuracy.json").read_text())
    assert result["counts"]["records"] == 2 and 0.0 <= result["accuracy"]["overall"]["value"] <= 1.0


def test_version_is_printed():
    from typer.testing import CliRunner

    from personalign import __version__
    from personalign.cli import app

    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"personalign {__version__}"

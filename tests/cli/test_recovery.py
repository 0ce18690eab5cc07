"""After each class of failure, a valid run works: refusals leave nothing behind that breaks the next
run, and caches that cannot be read are reported, deleted and recomputed."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from personalign.cli import app
from personalign.curate.synth import synth_records
from personalign.files import CACHE_DIRNAME
from personalign.records.io import write_jsonl

runner = CliRunner()
PAIRS = [{"prompt": f"Question {i}?", "chosen": f"A careful answer {i}.", "rejected": f"No {i}."} for i in range(4)]


def cli(*args, code: int = 0):
    res = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert res.exit_code == code, (res.exit_code, res.output)
    if code == 2:  # one error line, the last (model loading may print progress bars before it)
        errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and res.stderr.rstrip().endswith(errors[0]) and "Traceback" not in res.stderr
    return res


@pytest.fixture
def pairs(tmp_path) -> Path:
    path = tmp_path / "pairs.jsonl"
    write_jsonl(PAIRS, path)
    return path


def test_data_destroyed_class_output_onto_input_then_a_valid_output(tmp_path, pairs):
    before = pairs.read_bytes()
    cli("data", "build-views", pairs, "--out", pairs, code=2)
    assert pairs.read_bytes() == before
    cli("data", "build-views", pairs, "--out", tmp_path / "views.jsonl")
    assert len((tmp_path / "views.jsonl").read_text().splitlines()) == len(PAIRS)
    assert pairs.read_bytes() == before


def test_export_never_mixes_two_models(tmp_path, tiny_model_dir):
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    (other / "extra-weights.safetensors").write_bytes(b"from another model")
    res = cli("export", tiny_model_dir, "--out", other, code=2)
    assert "--overwrite" in res.stderr and (other / "extra-weights.safetensors").is_file()
    cli("export", tiny_model_dir, "--out", other, "--overwrite")
    assert not (other / "extra-weights.safetensors").exists()
    assert sorted(load_file(str(other / "model.safetensors"))) == sorted(load_file(str(tiny_model_dir / "model.safetensors")))
    cli("export", tiny_model_dir, "--out", other)  # an earlier export is this command's own output
    cli("models", "prepare", other)


def test_unwritable_output_class_then_a_writable_one(tmp_path):
    (tmp_path / "blocker").write_text("x")
    cli("data", "synth", "--n", "3", "--out", tmp_path / "blocker" / "s.jsonl", code=2)
    cli("data", "synth", "--n", "3", "--out", tmp_path / "ok" / "s.jsonl")
    assert len((tmp_path / "ok" / "s.jsonl").read_text().splitlines()) == 3


def test_bad_option_class_then_good_options(tmp_path, tiny_model_dir, one_torch_thread):
    data = tmp_path / "users.jsonl"
    write_jsonl(synth_records(4, seed=1), data)
    cli("eval", "accuracy", "--data", data, "--policy", tiny_model_dir, "--limit", "0", code=2)
    cli("eval", "accuracy", "--data", data, "--policy", tiny_model_dir, "--limit", "2", "--max-length", "256",
        "--out", tmp_path / "acc")
    assert json.loads((tmp_path / "acc" / "accuracy.json").read_text())["accuracy"]["overall"]["n"] == 2


def test_corrupt_reference_cache_is_reported_deleted_and_recomputed(tmp_path, tiny_model_dir, one_torch_thread):
    data = tmp_path / "users.jsonl"
    write_jsonl(synth_records(3, seed=2), data)
    args = ["eval", "accuracy", "--data", data, "--policy", tiny_model_dir, "--max-length", "256",
            "--out", tmp_path / "acc"]
    cli(*args)
    first = (tmp_path / "acc" / "scores.jsonl").read_text()
    [entry] = (tmp_path / CACHE_DIRNAME).glob("tokens-*/logprobs-*.safetensors")
    entry.write_bytes(entry.read_bytes()[:40])  # a torn write
    res = cli(*args)
    assert "warning: cache entry" in res.stderr and "recomputing" in res.stderr
    assert (tmp_path / "acc" / "scores.jsonl").read_text() == first
    load_file(str(entry))  # rewritten whole
    assert "warning" not in cli(*args).stderr


def test_corrupt_generation_cache_is_healed(tmp_path, tiny_model_dir, one_torch_thread, pairs):
    args = ["eval", "generate", "--data", pairs, "--model", tiny_model_dir, "--max-new-tokens", "2",
            "--out", tmp_path / "gen"]
    cli(*args)
    cache = tmp_path / "gen" / "generations.cache.jsonl"
    good = cache.read_text().splitlines()
    cache.write_text("\n".join(["garbage", *good[1:]]) + "\n")
    res = cli(*args)
    assert "1 unreadable entries deleted" in res.stderr
    assert "garbage" not in cache.read_text() and len(cache.read_text().splitlines()) == len(good)


def test_truncated_trainer_state_then_resume_from_an_earlier_checkpoint(tmp_path, tiny_model_dir, one_torch_thread):
    data = tmp_path / "users.jsonl"
    write_jsonl(synth_records(4, seed=3), data)
    run = tmp_path / "run"
    base = ["train", f"model={tiny_model_dir}", f"data={data}", f"output_dir={run}", "max_steps=2", "save_steps=1",
            "per_device_train_batch_size=2", "max_length=256", "report_to=none", "logging_steps=1"]
    cli(*base)
    state = run / "checkpoint-2" / "trainer_state.json"
    state.write_text(state.read_text()[:20])
    res = cli(*base, "resume_from_checkpoint=latest", code=2)
    assert "trainer_state.json" in res.stderr
    cli(*base, f"resume_from_checkpoint={run / 'checkpoint-1'}", "overwrite_output_dir=false")
    assert json.loads((run / "checkpoint-2" / "trainer_state.json").read_text())["step"] == 2


def test_empty_class_every_record_too_long_then_a_fitting_max_length(tmp_path, tiny_model_dir, one_torch_thread):
    data = tmp_path / "pairs.jsonl"
    write_jsonl([{**p, "chosen": p["chosen"] * 20, "rejected": p["rejected"] * 20} for p in PAIRS], data)
    base = ["train", f"model={tiny_model_dir}", f"data={data}", "max_steps=1", "per_device_train_batch_size=2",
            "report_to=none", "view.sample_history=false"]
    res = cli(*base, "max_length=8", f"output_dir={tmp_path / 'short'}", code=2)
    assert "too long for max_length=8" in res.stderr
    cli(*base, "max_length=512", f"output_dir={tmp_path / 'ok'}")
    assert (tmp_path / "ok" / "final").is_dir()


def test_empty_class_no_personas_then_inferred_personas(tmp_path, pairs, monkeypatch):
    from fake_llm import RuleBackend, echo_preferred

    from personalign.persona import infer as persona_infer
    from personalign.persona import judge as persona_judge

    for stage in (persona_infer, persona_judge):
        monkeypatch.setattr(stage, "make_backend", lambda cfg: RuleBackend(
            lambda q: echo_preferred(q) if "Preferred Response:" in q else "1"))
    cli("persona", "prefer", "--data", pairs, code=2)
    cli("persona", "infer", "--data", pairs, "--out", tmp_path / "personas.jsonl")
    res = cli("persona", "prefer", "--data", tmp_path / "personas.jsonl", "--out", tmp_path / "prefer.json")
    assert json.loads((tmp_path / "prefer.json").read_text())["n"] == len(PAIRS), res.output


def test_report_lists_unreadable_files_beside_readable_results(tmp_path):
    runs = tmp_path / "runs"
    (runs / "a").mkdir(parents=True)
    (runs / "a" / "metrics.jsonl").write_text('{"step": 1, "train/loss": 0.7}\n{"step": 2, "train/lo')
    (runs / "b").mkdir()
    (runs / "b" / "accuracy.json").write_text('{"mode": "raw", "accur')
    cli("report", runs / "b", "--out", tmp_path / "r.html", code=2)
    res = cli("report", runs, "--out", tmp_path / "r.html")
    assert "warning: could not read" in res.stderr
    html = (tmp_path / "r.html").read_text()
    assert "Files that could not be read" in html and "accuracy.json" in html and "metrics.jsonl" in html
    assert "Training curves" in html


def test_unreachable_server_then_a_running_one(tmp_path, pairs, tiny_lm, free_port):
    from personalign.llm.local import LocalBackend
    from personalign.serve.app import create_app, serve_in_background

    url = f"http://127.0.0.1:{free_port}/v1"
    res = cli("persona", "infer", "--data", pairs, "--out", tmp_path / "p.jsonl", "--backend", "openai",
              "--model", "tiny", "--base-url", url, "--max-new-tokens", "2", code=2)
    assert "cannot reach the server" in res.stderr
    with serve_in_background(create_app(LocalBackend(*tiny_lm), view="none")) as served:
        cli("persona", "infer", "--data", pairs, "--out", tmp_path / "p.jsonl", "--backend", "openai",
            "--model", "tiny", "--base-url", served, "--max-new-tokens", "2")
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == len(PAIRS)


def test_wrong_kind_of_model_then_a_causal_lm(tmp_path, pairs, tiny_model_dir, one_torch_thread):
    seqcls = tmp_path / "seqcls"
    shutil.copytree(tiny_model_dir, seqcls)
    config = json.loads((seqcls / "config.json").read_text())
    (seqcls / "config.json").write_text(json.dumps({**config, "architectures": ["LlamaForSequenceClassification"]}))
    cli("eval", "generate", "--data", pairs, "--model", seqcls, "--out", tmp_path / "gen", code=2)
    cli("eval", "generate", "--data", pairs, "--model", tiny_model_dir, "--max-new-tokens", "2",
        "--out", tmp_path / "gen")
    assert len((tmp_path / "gen" / "generations.jsonl").read_text().splitlines()) == len(PAIRS)


def test_internal_errors_are_one_line_exit_1_and_debug_shows_the_traceback(monkeypatch, tmp_path):
    from personalign.cli import data as data_cli

    def boom(*a, **k):
        raise KeyError("a bug")

    monkeypatch.setattr("personalign.curate.synth.synth_records", boom)
    res = runner.invoke(app, ["data", "synth", "--n", "2", "--out", str(tmp_path / "s.jsonl")], env={"COLUMNS": "200"})
    assert res.exit_code == 1 and res.stderr.startswith("error: internal error: KeyError") and "Traceback" not in res.stderr
    res = runner.invoke(app, ["--debug", "data", "synth", "--n", "2", "--out", str(tmp_path / "s.jsonl")],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 1 and "Traceback" in res.stderr and data_cli is not None

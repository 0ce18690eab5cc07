from __future__ import annotations

import json

import pytest
from fake_llm import RuleBackend, echo_preferred, field, pair_records
from typer.testing import CliRunner

from personalign.cli import app
from personalign.persona import infer as persona_infer
from personalign.persona import judge as persona_judge

runner = CliRunner()


def router(query: str) -> str:
    """Persona inference by echo; judges pick the response/persona naming the wanted word."""
    if "Preferred Response:" in query:
        return echo_preferred(query)
    if "Persona 1:" in query:
        return "1"
    word = field(query, "Persona").split()[-1].strip(".")
    return "Response 1" if field(query, "Response 1").startswith(word) else "Response 2"


@pytest.fixture
def fake_backend(monkeypatch):
    built = []

    def make(cfg):
        built.append(cfg)
        return RuleBackend(router)

    for stage in (persona_infer, persona_judge):
        monkeypatch.setattr(stage, "make_backend", make)
    return built


def invoke(*args):
    res = runner.invoke(app, ["persona", *map(str, args)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return " ".join(res.output.split())


def test_infer_accuracy_prefer_saliency(tmp_path, write_records, fake_backend):
    data, out = write_records(pair_records(12)), tmp_path / "personas.jsonl"
    text = invoke("infer", "--data", data, "--out", out, "--limit", 10, "--batch-size", 3, "--model", "m")
    assert "wrote 10 records with 20 personas" in text and "20 generated" in text
    assert [(c.kind, c.model, c.batch_size) for c in fake_backend] == [("local", "m", 3)]
    assert "0 generated, 20 reused" in invoke("infer", "--data", data, "--out", out, "--limit", 10)

    acc = tmp_path / "acc.json"
    invoke("accuracy", "--data", out, "--persona-field", "rejected_persona", "--out", acc)
    result = json.loads(acc.read_text())
    assert result["accuracy"]["value"] == 1.0 and result["n_personas"] == 10
    assert result["persona_field"] == "rejected_persona"
    assert (tmp_path / "acc.json.cache.jsonl").read_text().count("\n") == 20

    pref = tmp_path / "pref.json"
    invoke("prefer", "--data", out, "--out", pref)
    assert json.loads(pref.read_text())["rates"] == {"chosen": 0.0, "tie": 1.0, "rejected": 0.0}

    sal = tmp_path / "sal.json"
    for method, word in (("seed", "apple"), ("ours", "apples")):
        printed = invoke("saliency", "--data", out, "--cutoff", 2, "--method", method, "--out", sal)
        words = {label: {r["word"]: r["saliency"] for r in rows} for label, rows in json.loads(sal.read_text()).items()}
        assert f"most salient words of chosen personas (10 personas, {method}, cutoff 2)" in printed
        assert words["chosen"][word] == 2 / 3 and words["rejected"][word] == 1 / 3


def test_missing_data_is_a_clean_error(tmp_path, fake_backend):
    res = runner.invoke(app, ["persona", "accuracy", "--data", str(tmp_path / "none.jsonl")])
    assert res.exit_code == 2 and "no such file" in res.output

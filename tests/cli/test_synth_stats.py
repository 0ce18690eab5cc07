from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from typer.testing import CliRunner

from personalign.cli import app
from personalign.curate.stats import compute_stats
from personalign.curate.synth import synth_records
from personalign.records.io import read_examples

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_synth_jsonl_is_the_library_output(tmp_path):
    out = tmp_path / "d.jsonl"
    res = invoke("data", "synth", "--n", "40", "--out", str(out), "--seed", "3")
    assert res.exit_code == 0, res.output
    assert "wrote 40 alignx records" in res.output
    lines = out.read_text().splitlines()
    assert [json.loads(line) for line in lines] == list(synth_records(40, seed=3))


def test_synth_ranking_parquet(tmp_path):
    out = tmp_path / "r.parquet"
    res = invoke("data", "synth", "--n", "25", "--kind", "ranking", "--k", "3", "--out", str(out))
    assert res.exit_code == 0, res.output
    examples = list(read_examples(out))
    assert len(examples) == 25 and all(len(ex.responses) == 3 and len(ex.rewards) == 3 for ex in examples)


@pytest.mark.parametrize("args", [("--out", "x.csv"), ("--kind", "ranking", "--k", "99", "--out", "x.jsonl")])
def test_synth_rejects_bad_options(tmp_path, args):
    args = [a if not a.startswith("x.") else str(tmp_path / a) for a in args]
    res = runner.invoke(app, ["data", "synth", "--n", "5", *args])
    assert res.exit_code == 2
    assert not list(tmp_path.iterdir())


def test_stats_tables_and_json(tmp_path):
    data, js = tmp_path / "d.jsonl", tmp_path / "stats.json"
    assert invoke("data", "synth", "--n", "60", "--out", str(data)).exit_code == 0
    res = invoke("data", "stats", str(data), "--json", str(js), "--top", "3")
    assert res.exit_code == 0, res.output
    assert "60 records" in res.output and "most used preference dimensions" in res.output
    assert json.loads(js.read_text()) == json.loads(json.dumps(compute_stats(read_examples(data)).to_dict()))


def test_stats_with_a_tokenizer_directory(tmp_path):
    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(tmp_path / "tok")
    data, js = tmp_path / "w.jsonl", tmp_path / "stats.json"
    data.write_text("".join(json.dumps({"prompt": "a b c", "chosen": "x " * n, "rejected": "y"}) + "\n" for n in (1, 2, 3)))
    res = invoke("data", "stats", str(data), "--tokenizer", str(tmp_path / "tok"), "--json", str(js))
    assert res.exit_code == 0, res.output
    tokens = json.loads(js.read_text())["tokens"]
    assert tokens["prompt"] == {"p5": 3, "p50": 3, "p95": 3, "max": 3, "mean": 3.0}
    assert tokens["chosen"] == {"p5": 1, "p50": 2, "p95": 3, "max": 3, "mean": 2.0}


def test_stats_reports_a_bad_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a"}\n')
    res = runner.invoke(app, ["data", "stats", str(bad)])
    assert res.exit_code == 2 and "rejected" in res.output

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_llm import RuleBackend, echo_preferred, field, pair_records
from procs import launched, run, wait_for

from personalign.llm.cache import GenerationCache
from personalign.persona.infer import default_cache_path, infer_personas, parse_persona
from personalign.records.io import read_examples

FAKE_LLM = Path(__file__).parents[1] / "fake_llm.py"


@pytest.mark.parametrize(
    ("output", "persona", "repaired"),
    [
        ("The user values brevity.", "The user values brevity.", False),
        ("\n\n  The user values brevity. They skim.\nMore text", "The user values brevity.", False),
        ('- Persona: "The user wants facts."', "The user wants facts.", False),
        ("**Persona:** The user is curious", "The user is curious", False),
        ("1. The user likes lists over prose.", "The user likes lists over prose.", False),
        ("Prefers warm, friendly replies.", "The user prefers warm, friendly replies.", True),
        ("the user likes jokes", "The user likes jokes", True),
        ("User: likes jokes", "The user likes jokes", True),
        ("A user who wants short answers.", "The user who wants short answers.", True),
        ("The user's goal is speed.", "The user's goal is speed.", False),
        ("I think so", "The user I think so", True),
        ("", "", False),
        ("  \n - \n", "", False),
        ("The user.", "", False),
    ],
)
def test_parse_persona(output, persona, repaired):
    parsed = parse_persona(output)
    assert (parsed.persona, parsed.repaired) == (persona, repaired)


def test_infer_adds_both_personas_and_keeps_other_keys(tmp_path, write_records):
    records = pair_records(6)
    data = write_records(records)
    backend = RuleBackend(lambda q: f"wants {field(q, 'Preferred Response').split()[0]}")
    stats = infer_personas(data, backend, tmp_path / "out.jsonl", chunk_size=4)
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(out) == 6
    for rec, src in zip(out, records):
        assert rec["chosen_persona"] == f"The user wants {src['chosen'].split()[0]}"
        assert rec["rejected_persona"] == f"The user wants {src['rejected'].split()[0]}"
        assert {k: rec[k] for k in src} == src
    assert (stats.records, stats.personas, stats.generated, stats.reused, stats.repaired) == (6, 12, 12, 0, 12)
    assert max(map(len, backend.calls)) == 4


def test_infer_one_side_and_limit(tmp_path, write_records):
    data = write_records(pair_records(5))
    stats = infer_personas(data, RuleBackend(echo_preferred), tmp_path / "out.json", sides=("rejected",), limit=3)
    examples = list(read_examples(tmp_path / "out.json"))
    assert len(examples) == 3 and stats.personas == 3
    assert all("chosen_persona" not in ex.user.personas and ex.user.personas["rejected_persona"] for ex in examples)


def test_rerun_generates_nothing_and_a_new_model_regenerates(tmp_path, write_records):
    data = write_records(pair_records(4))
    out = tmp_path / "out.jsonl"
    infer_personas(data, RuleBackend(echo_preferred), out)
    first = out.read_text()
    again = RuleBackend(echo_preferred)
    stats = infer_personas(data, again, out)
    assert (stats.generated, stats.reused, again.n_requests) == (0, 8, 0)
    assert out.read_text() == first
    other = RuleBackend(echo_preferred, identity="another-model")
    assert infer_personas(data, other, out).generated == 8


def test_identical_records_share_one_generation(tmp_path, write_records):
    records = pair_records(2)
    data = write_records([*records, {**records[0], "meta": {"id": 9}}])
    backend = RuleBackend(echo_preferred)
    stats = infer_personas(data, backend, tmp_path / "out.jsonl")
    assert (stats.personas, stats.generated, stats.reused, backend.n_requests) == (6, 4, 2, 4)
    out = list(read_examples(tmp_path / "out.jsonl"))
    assert out[2].user.personas == out[0].user.personas and out[2].extra == {"meta": {"id": 9}}


def test_empty_outputs_are_counted_and_left_unset(tmp_path, write_records):
    data = write_records(pair_records(2))
    stats = infer_personas(data, RuleBackend(lambda q: "  \n"), tmp_path / "out.jsonl")
    assert (stats.empty, stats.personas) == (4, 0)
    assert all(not ex.user.personas for ex in read_examples(tmp_path / "out.jsonl"))


def test_torn_cache_line_is_cut_and_regenerated(tmp_path, write_records):
    data = write_records(pair_records(3))
    out = tmp_path / "out.jsonl"
    infer_personas(data, RuleBackend(echo_preferred), out)
    cache = default_cache_path(out)
    lines = cache.read_text().splitlines(keepends=True)
    cache.write_text("".join(lines[:-1]) + lines[-1][:25])
    backend = RuleBackend(echo_preferred)
    stats = infer_personas(data, backend, out)
    assert (stats.generated, stats.reused, stats.cache_truncated_bytes) == (1, 5, 25)
    keys = [json.loads(line)["key"] for line in cache.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 6


def test_sigkill_mid_run_then_resume(tmp_path, write_records):
    """A real kill: the subprocess infers slowly, dies by SIGKILL, and a rerun completes the file."""
    n = 30
    data = write_records(pair_records(n))
    out, cache = tmp_path / "out.jsonl", tmp_path / "cache.jsonl"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    # the child parks after 6 answers (3 stored chunks of 2) and says so; the kill cannot race its work
    with launched([sys.executable, str(FAKE_LLM), str(data), str(out), str(cache), "0", "6"], env=env,
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        wait_for(cache.with_name(cache.name + ".parked"), proc, timeout=300)
    done_before = cache.read_bytes().count(b"\n")
    assert done_before == 6 and not out.exists()

    rerun = run([sys.executable, str(FAKE_LLM), str(data), str(out), str(cache), "0"], env=env, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    stats = json.loads(rerun.stdout.splitlines()[-1])
    assert stats["reused"] == done_before and stats["generated"] == 2 * n - done_before
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["meta"]["id"] for r in records] == list(range(n))
    for r in records:
        assert r["chosen_persona"] == f"The user wants {r['chosen'].split()[0]}."
        assert r["rejected_persona"] == f"The user wants {r['rejected'].split()[0]}."
    keys = [json.loads(line)["key"] for line in cache.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 2 * n
    with GenerationCache(cache) as reopened:
        assert len(reopened) == 2 * n and reopened.truncated_bytes == 0

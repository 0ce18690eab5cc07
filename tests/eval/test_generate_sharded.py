"""`eval generate` under a 2-process launch: the records are shared out, each process writes its own
cache shard (merged at the end), every record is answered exactly once, and a killed run resumes
without generating anything twice."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from procs import free_port, launched, retry_on_port_conflict, run, wait_for

from personalign.eval.generate import CACHE_FILE, read_generations
from personalign.records.io import write_jsonl

HERE = Path(__file__).parent


def records(n: int) -> list[dict]:
    return [{"prompt": f"Question number {i}?", "chosen": f"good answer {i}", "rejected": f"bad answer {i}",
             "ground_truth_persona": f"The user is person {i}."} for i in range(n)]


def command(data: Path, out: Path, calls: Path, port: int, park_after: int | None = None) -> list[str]:
    extra = [] if park_after is None else [str(park_after)]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
            str(HERE / "generate_worker.py"), str(data), str(out), str(calls), *extra]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}


def launch(data: Path, out: Path, calls: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return retry_on_port_conflict(lambda port: run(command(data, out, calls, port), env=ENV | (env or {}), timeout=300))


def asked(calls: Path) -> list[list[str]]:
    return [[json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []
            for p in (calls.with_name(calls.name + f".rank{r}") for r in (0, 1))]


@pytest.mark.duration(15)
def test_two_processes_answer_every_record_once(tmp_path):
    data = tmp_path / "data.jsonl"
    write_jsonl(records(9), data)
    proc = launch(data, tmp_path / "run", tmp_path / "calls")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = asked(tmp_path / "calls")
    assert rank0 and rank1 and not set(rank0) & set(rank1) and len(rank0) + len(rank1) == 9
    rows = read_generations(tmp_path / "run")
    assert [r["index"] for r in rows] == list(range(9))
    assert {r["response"].removeprefix("echo: ") for r in rows} == set(rank0) | set(rank1)
    assert not list((tmp_path / "run").glob(f"{CACHE_FILE}.rank*"))  # the shards were merged
    assert len((tmp_path / "run" / CACHE_FILE).read_text().splitlines()) == 9


@pytest.mark.duration(20)
def test_a_killed_launch_resumes_without_repeats(tmp_path):
    data = tmp_path / "data.jsonl"
    write_jsonl(records(10), data)
    parked = [tmp_path / f"calls.rank{r}.parked" for r in (0, 1)]
    parking = command(data, tmp_path / "run", tmp_path / "calls", free_port(), park_after=2)
    with launched(parking, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:  # both park, then die
        wait_for(parked[0], proc, timeout=120, ready=lambda: all(p.exists() for p in parked))
    first = sum(asked(tmp_path / "calls"), [])
    assert len(first) == 4 and not (tmp_path / "run" / "generations.jsonl").exists()

    for p in tmp_path.glob("calls.rank*"):
        p.unlink()
    resumed = launch(data, tmp_path / "run", tmp_path / "calls")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    second = sum(asked(tmp_path / "calls"), [])
    assert not set(first) & set(second) and len(first) + len(second) == 10
    assert len(read_generations(tmp_path / "run")) == 10


@pytest.mark.duration(15)
def test_best_of_n_is_scored_by_every_process_as_one_process_scores_it(tmp_path):
    """The reward pass of best-of-n runs on both processes (records shared out, every process gets the
    table): the rewards and picks equal one process's."""
    from personalign.eval.generate import GenerateConfig, best_of_n
    from personalign.llm.base import GenerationConfig
    from personalign.models.rewards import load_reward_model
    from personalign.records.io import read_examples
    from personalign.testing import save_tiny
    from personalign.views.build import ViewConfig

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model, tok = load_reward_model(save_tiny(tmp_path / "lm", seed=5))  # a fixed score head, saved once
    model.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    data = tmp_path / "data.jsonl"
    write_jsonl(records(5), data)
    proc = launch(data, tmp_path / "run", tmp_path / "calls", env={"BEST_OF_RM": str(tmp_path / "rm")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [(tmp_path / f"calls.rank{r}.scored").read_text() for r in (0, 1)] == ["2\n", "2\n"]
    rows = read_generations(tmp_path / "run")
    assert [len(r["candidates"]) for r in rows] == [2] * 5
    cfg = GenerateConfig(data=str(data), out=str(tmp_path / "one"), view=ViewConfig(view="persona", persona_source="gold"),
                         best_of=2, reward_model=str(tmp_path / "rm"), generation=GenerationConfig(temperature=1.0))
    one = best_of_n(cfg, list(read_examples(data)), [r["candidates"] for r in rows])
    for row, expected in zip(rows, one):
        assert row["candidate_rewards"] == pytest.approx(expected["candidate_rewards"], abs=1e-5)
        assert row["best_index"] == expected["best_index"] and row["response"] == expected["response"]
    assert len({round(r, 4) for row in rows for r in row["candidate_rewards"]}) > 5  # the rewards differ

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


def launch(data: Path, out: Path, calls: Path) -> subprocess.CompletedProcess:
    return retry_on_port_conflict(lambda port: run(command(data, out, calls, port), env=ENV, timeout=300))


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

"""The one scoring path (`score_store`): parity with plain forwards, batch-bounded reads, equal work
over processes, and a journal that makes a killed pass resume where it stopped."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from procs import launched, retry_on_port_conflict, run, wait_for

from personalign.models.logprobs import length_batches
from personalign.models.scorer import ResponseLogprobs, score_store

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import scoring_worker as worker  # noqa: E402


def plain_logps(lm, prompt: list[int], response: list[int]) -> float:
    """log p(response | prompt) from one ordinary forward over prompt ‖ response."""
    with torch.no_grad():
        logits = lm(torch.tensor([prompt + response])).logits[0, len(prompt) - 1 : -1].float()
    return logits.log_softmax(-1).gather(1, torch.tensor(response)[:, None]).sum().item()


def test_table_matches_plain_forwards_and_reads_one_batch_at_a_time(one_torch_thread):
    lm, tok = worker.model()
    rows = worker.rows(tok)
    read = []
    real = rows.examples
    object.__setattr__(rows, "examples", lambda idx: read.append(list(idx)) or real(idx))
    table = score_store(lm, rows, max_tokens_per_batch=worker.BUDGET, batch_size=4, progress=False)
    assert max(len(r) for r in read) <= 4 and sorted(i for r in read for i in r) == list(range(len(rows)))
    for i, t in enumerate(rows.items):
        for j, response in enumerate(t.response_ids):
            assert abs(table.logps[i, j].item() - plain_logps(lm, t.prompt_ids, response)) < 1e-4
            assert table.n_tokens[i, j].item() == len(response)
    again = score_store(ResponseLogprobs(lm), rows, max_tokens_per_batch=worker.BUDGET, progress=False)
    torch.testing.assert_close(again.logps, table.logps, atol=1e-4, rtol=0)


def test_a_killed_pass_resumes_with_only_what_was_missing(tmp_path, one_torch_thread):
    journal = tmp_path / "journal"
    with launched([sys.executable, str(HERE / "scoring_worker.py"), "slow", str(journal)],
                  env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE) as proc:
        wait_for(journal / "parked", proc, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    kept = [i for line in (journal / "rank-0.jsonl").read_text().splitlines() for i in json.loads(line)["i"]]

    lm, tok = worker.model()
    rows = worker.rows(tok)
    assert 0 < len(kept) < len(rows)
    scored = []
    real = rows.examples
    object.__setattr__(rows, "examples", lambda idx: scored.extend(idx) or real(idx))
    resumed = score_store(lm, rows, max_tokens_per_batch=worker.BUDGET, journal=journal, progress=False)
    assert sorted(scored) == sorted(set(range(len(rows))) - set(kept))
    whole = score_store(lm, worker.rows(tok), max_tokens_per_batch=worker.BUDGET, progress=False)
    torch.testing.assert_close(resumed.logps, whole.logps, atol=1e-5, rtol=0)
    assert torch.equal(resumed.n_tokens, whole.n_tokens)


@pytest.mark.duration(16)
def test_two_processes_do_equal_work_and_return_the_one_process_table(tmp_path, one_torch_thread):
    proc = retry_on_port_conflict(lambda port: run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
         str(HERE / "scoring_worker.py"), "sharded", str(tmp_path)], env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lm, tok = worker.model()
    rows = worker.rows(tok)
    single = score_store(lm, rows, max_tokens_per_batch=worker.BUDGET, progress=False)
    sharded = torch.load(tmp_path / "table.pt", weights_only=False)
    torch.testing.assert_close(sharded.logps, single.logps, atol=1e-5, rtol=0)
    assert torch.equal(sharded.n_tokens, single.n_tokens)
    n_batches = len(length_batches(rows.packed_lengths, max_tokens_per_batch=worker.BUDGET))
    assert n_batches % 2 == 1  # the last rank repeats a batch to stay in step
    forwards = [json.loads((tmp_path / f"forwards-{r}.json").read_text()) for r in (0, 1)]
    assert forwards[0] == forwards[1] == (n_batches + 1) // 2 * _forwards_per_batch(lm, rows)


def _forwards_per_batch(lm, rows) -> int:
    """Decoder calls per scored batch (the prompt-cache path runs two)."""
    calls = []
    hook = lm.register_forward_pre_hook(lambda *_: calls.append(1))
    score_store(lm, type(rows)(rows.items[:1]), progress=False)
    hook.remove()
    return len(calls)

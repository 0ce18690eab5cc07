"""`score_store` in a process of its own, for tests/models/test_scorer.py: `slow JOURNAL` scores until 3
batches are journaled, then writes `JOURNAL/parked` and parks (to be killed), `sharded OUT` runs as one
of the processes of a torchrun launch."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from personalign.models.scorer import InMemoryRows, score_store
from personalign.records.tokens import tokenize_pair
from personalign.testing import tiny_causal_lm

BUDGET = 160  # padded tokens per batch: several batches of different sizes


def rows(tok) -> InMemoryRows:
    texts = [(f"Question {i}: " + "tell me more " * (i % 7), [f"Sure, number {i}.", "No." * (1 + i % 3)])
             for i in range(23)]
    return InMemoryRows([tokenize_pair(tok, p, rs) for p, rs in texts])


def model():
    return tiny_causal_lm(seed=5)


def main(mode: str, out: Path) -> None:
    torch.set_num_threads(1)
    lm, tok = model()
    if mode == "slow":
        def park(*_):  # before a forward: once 3 batches are journaled, say so and wait to be killed
            done = out / "rank-0.jsonl"
            if done.exists() and done.read_text().count("\n") >= 3:
                (out / "parked").touch()
                time.sleep(600)

        lm.register_forward_pre_hook(park)
        score_store(lm, rows(tok), max_tokens_per_batch=BUDGET, journal=out, progress=False)
        return
    from accelerate import PartialState

    state = PartialState(cpu=True)
    forwards = []
    lm.register_forward_pre_hook(lambda *_: forwards.append(1))
    table = score_store(lm, rows(tok), state=state, max_tokens_per_batch=BUDGET, journal=out / "journal",
                        progress=False)
    (out / f"forwards-{state.process_index}.json").write_text(json.dumps(len(forwards)))
    if state.is_main_process:
        torch.save(table, out / "table.pt")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))

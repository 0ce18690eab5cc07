"""`eval generate` in one process of a torchrun launch, for tests/eval/test_generate_sharded.py.

`python -m torch.distributed.run --nproc_per_node 2 THIS DATA OUT CALLS [PARK_AFTER]`: each process
answers with a rule backend that appends every request it is asked to `CALLS.rank<r>`; with
PARK_AFTER a process parks (writes `CALLS.rank<r>.parked`, then sleeps until killed) after answering
that many requests. With BEST_OF_RM=<reward model dir> in the environment, each record gets the best of two
samples (the backend's answer carries the sampling seed) under that reward model.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from personalign.eval.generate import GenerateConfig, generate_responses
from personalign.models.loading import process_state
from personalign.views.build import ViewConfig


class Recording:
    identity = "fake-recording"

    def __init__(self, log: Path, park_after: int | None):
        self.log, self.park_after, self.answered = log, park_after, 0

    def generate(self, requests, config, *, progress=True):
        out = []
        for r in requests:
            if self.park_after is not None and self.answered >= self.park_after:
                self.log.with_name(self.log.name + ".parked").touch()
                time.sleep(600)
            text = r if isinstance(r, str) else r[-1]["content"]
            with open(self.log, "a") as f:
                f.write(json.dumps(text) + "\n")
            self.answered += 1
            out.append(f"echo: {text}" if config.temperature == 0 else f"echo {config.seed}: {text}")
        return out


def record_reward_passes(log: Path) -> None:
    """Make every reward pass append the number of processes it shares the rows over to `log`."""
    from personalign.models import scorer

    score_store = scorer.score_store

    def recorded(model, rows, *, state=None, **kwargs):
        with open(log, "a") as f:
            f.write(f"{1 if state is None else state.num_processes}\n")
        return score_store(model, rows, state=state, **kwargs)

    scorer.score_store = recorded


def main(data: str, out: str, calls: str, park_after: int | None) -> None:
    rank = process_state().process_index
    cfg = GenerateConfig(data=data, out=out, view=ViewConfig(view="persona", persona_source="gold"), chunk_size=1)
    if "BEST_OF_RM" in os.environ:
        cfg = cfg.model_copy(update={"best_of": 2, "reward_model": os.environ["BEST_OF_RM"],
                                     "generation": cfg.generation.model_copy(update={"temperature": 1.0})})
        record_reward_passes(Path(f"{calls}.rank{rank}.scored"))
    generate_responses(cfg, Recording(Path(f"{calls}.rank{rank}"), park_after))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else None)

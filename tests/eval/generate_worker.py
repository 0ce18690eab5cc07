"""`eval generate` in one process of a torchrun launch, for tests/eval/test_generate_sharded.py.

`python -m torch.distributed.run --nproc_per_node 2 THIS DATA OUT CALLS [PARK_AFTER]`: each process
answers with a rule backend that appends every request it is asked to `CALLS.rank<r>`; with
PARK_AFTER a process parks (writes `CALLS.rank<r>.parked`, then sleeps until killed) after answering
that many requests.
"""
from __future__ import annotations

import json
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
            out.append(f"echo: {text}")
        return out


def main(data: str, out: str, calls: str, park_after: int | None) -> None:
    rank = process_state().process_index
    cfg = GenerateConfig(data=data, out=out, view=ViewConfig(view="persona", persona_source="gold"), chunk_size=1)
    generate_responses(cfg, Recording(Path(f"{calls}.rank{rank}"), park_after))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else None)

"""A rule-based Backend for tests, and a script that runs persona inference with a slow one.

`python fake_llm.py DATA OUT CACHE DELAY [PARK_AFTER]` infers personas with `RuleBackend(echo_preferred,
delay=DELAY)` in chunks of 2 and prints the InferStats as JSON; with PARK_AFTER it parks (sleeps until
killed, after touching `CACHE.parked`) before answering request PARK_AFTER + 1 (the kill/resume test).
"""
from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from personalign.llm.base import GenerationConfig, Request


class RuleBackend:
    """Answers every request with `rule(last user message)`; records what it was asked."""

    def __init__(self, rule: Callable[[str], str], identity: str = "fake-rule", delay: float = 0.0,
                 park_after: int | None = None, parked: Path | None = None):
        self.rule, self._identity, self.delay, self.park_after = rule, identity, delay, park_after
        self.parked = parked
        self.calls: list[list[Request]] = []

    @property
    def identity(self) -> str:
        return self._identity

    def generate(self, requests: Sequence[Request], config: GenerationConfig, *, progress: bool = True) -> list[str]:
        self.calls.append(list(requests))
        out = []
        for r in requests:
            if self.park_after is not None and self.n_requests - len(requests) + len(out) >= self.park_after:
                if self.parked is not None:
                    self.parked.touch()
                time.sleep(600)  # parked until killed
            time.sleep(self.delay)
            out.append(self.rule(r if isinstance(r, str) else r[-1]["content"]))
        return out

    @property
    def n_requests(self) -> int:
        return sum(map(len, self.calls))


WORDS = ["apples", "bikes", "cats", "dunes", "eagles", "forests", "gardens", "harbors"]


def pair_records(n: int) -> list[dict]:
    """n distinct records: chosen starts with one word, rejected with another; an extra key kept."""
    return [
        {"prompt": f"Question {i}?", "chosen": f"{WORDS[i % 8]} answer {i}",
         "rejected": f"{WORDS[(i + 3) % 8]} reply {i}", "meta": {"id": i}}
        for i in range(n)
    ]


def field(query: str, name: str) -> str:
    """The text after `name: ` up to the next blank line."""
    return re.search(rf"^{name}: (.*?)(?:\n\n|\Z)", query, re.M | re.S).group(1)


def echo_preferred(query: str) -> str:
    """Inference rule: a persona naming the first word of the preferred response."""
    return f"The user wants {field(query, 'Preferred Response').split()[0]}."


def main() -> None:
    from personalign.persona.infer import infer_personas

    data, out, cache, delay = sys.argv[1:5]
    park_after = int(sys.argv[5]) if len(sys.argv) > 5 else None
    backend = RuleBackend(echo_preferred, delay=float(delay), park_after=park_after, parked=Path(cache + ".parked"))
    stats = infer_personas(data, backend, out, cache_path=cache, chunk_size=2)
    print(json.dumps(stats.as_dict()))


if __name__ == "__main__":
    main()


def send_json(handler, payload: dict, status: int = 200) -> None:
    """Answer an `http.server` request with `payload` as JSON (the loopback OpenAI-compatible servers)."""
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)

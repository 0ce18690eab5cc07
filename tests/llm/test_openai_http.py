"""OpenAIBackend against a fault-injecting loopback server: retries, order, no duplicate work, key safety."""
from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
from email.utils import formatdate

import pytest

from personalign.config import dump_config
from personalign.llm import BackendConfig, GenerationConfig, make_backend
from personalign.llm.openai_http import BackendError, OpenAIBackend, backoff_delay, parse_retry_after

# The client gives up on a "slow" reply after `timeout` s; an ordinary reply on a loaded 2-core machine
# must arrive well within it, so it is generous, and the server holds "slow" replies far longer.
FAST = {"timeout": 4.0, "backoff_base": 0.01, "backoff_cap": 0.05}


def _backend(url, **kwargs) -> OpenAIBackend:
    return OpenAIBackend("fault-model", url, **{"max_retries": 5, "concurrency": 4, **FAST, **kwargs})


SCHEDULE = {
    0: ["429", "ok"],
    1: ["500", "500", "ok"],
    2: ["slow", "ok"],
    3: ["drop", "ok"],
    4: ["drop", "429", "500", "ok"],
    5: ["slow", "drop", "ok"],
    7: ["429", "429", "ok"],
    9: ["500", "drop", "ok"],
}


def test_every_request_completes_in_order_once(fault_server):
    with fault_server(SCHEDULE) as server:
        backend = _backend(server.url)
        texts = backend.generate([f"req-{i}: say hi" for i in range(12)], GenerationConfig(max_new_tokens=4), progress=False)
    assert texts == [f"answer-{i}" for i in range(12)]
    assert all(server.successes[i] == 1 for i in range(12)), dict(server.successes)
    for i in range(12):
        assert [a for a, _ in server.attempts[i]] == SCHEDULE.get(i, ["ok"])


def test_retry_after_is_honoured(fault_server, caplog):
    with fault_server({i: ["429", "ok"] for i in range(3)}, retry_after=0.3) as server:
        assert _backend(server.url).generate([f"req-{i}" for i in range(3)], GenerationConfig(), progress=False)
    retries = [r for r in caplog.records if r.name == "personalign.llm.openai_http"]
    assert len(retries) == 3 and all(r.levelname == "WARNING" and "HTTP 429" in r.getMessage() for r in retries)
    for i in range(3):
        (sent,) = server.sent_429[i]
        retried_at = server.attempts[i][1][1]
        assert retried_at - sent >= 0.3


def test_parse_retry_after_seconds_date_and_ms():
    now = 1_800_000_000.0
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": formatdate(now + 5, usegmt=True)}, now=now) == 5.0
    assert parse_retry_after({"retry-after": formatdate(now - 5, usegmt=True)}, now=now) == 0.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_backoff_is_full_jitter_under_the_cap():
    rng = random.Random(0)
    for attempt in range(8):
        ceiling = min(2.0, 0.1 * 2**attempt)
        delays = [backoff_delay(attempt, 0.1, 2.0, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.5 * ceiling and min(delays) < 0.5 * ceiling


def test_gives_up_after_max_retries(fault_server):
    with fault_server(default=["500"]) as server:
        with pytest.raises(BackendError, match="after 3 attempts.*HTTP 500"):
            _backend(server.url, max_retries=2).generate(["req-0"], GenerationConfig(), progress=False)
    assert len(server.attempts[0]) == 3


def test_client_errors_are_not_retried(fault_server):
    with fault_server(default=["400"]) as server:
        with pytest.raises(BackendError, match="HTTP 400"):
            _backend(server.url).generate(["req-0"], GenerationConfig(), progress=False)
    assert len(server.attempts[0]) == 1


def test_completions_endpoint_passes_settings_through(fault_server):
    cfg = GenerationConfig(max_new_tokens=7, temperature=0.7, top_p=0.9, top_k=10, stop=["\n\n"], seed=3)
    with fault_server() as server:
        texts = _backend(server.url, endpoint="completions").generate(["req-0 raw"], cfg, progress=False)
    assert texts == ["answer-0"]
    body = server.bodies[0]
    assert body["prompt"] == "req-0 raw"
    assert {k: body[k] for k in ("model", "max_tokens", "temperature", "top_p", "top_k", "stop", "seed")} == {
        "model": "fault-model", "max_tokens": 7, "temperature": 0.7, "top_p": 0.9, "top_k": 10, "stop": ["\n\n"],
        "seed": 3,
    }


def test_chat_endpoint_sends_conversations_and_wraps_strings(fault_server):
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "req-1 hi"}]
    with fault_server() as server:
        assert _backend(server.url).generate(["req-0", chat], GenerationConfig(), progress=False) == ["answer-0", "answer-1"]
    assert server.bodies[0]["messages"] == [{"role": "user", "content": "req-0"}]
    assert server.bodies[1]["messages"] == chat


def test_sync_generate_inside_a_running_event_loop(fault_server):
    with fault_server() as server:
        backend = _backend(server.url)

        async def caller():
            return backend.generate(["req-0", "req-1"], GenerationConfig(), progress=False)

        assert asyncio.run(caller()) == ["answer-0", "answer-1"]


def test_several_servers_share_work_and_cover_a_dead_one(fault_server):
    with fault_server() as a, fault_server() as b:
        texts = _backend([a.url, b.url], concurrency=2).generate([f"req-{i}" for i in range(8)], GenerationConfig(), progress=False)
        assert texts == [f"answer-{i}" for i in range(8)]
        assert a.successes and b.successes
    with fault_server(default=["drop"]) as dead, fault_server() as alive:
        texts = _backend([dead.url, alive.url]).generate([f"req-{i}" for i in range(8)], GenerationConfig(), progress=False)
    assert texts == [f"answer-{i}" for i in range(8)]
    assert all(alive.successes[i] == 1 for i in range(8)) and not dead.successes


def test_config_takes_a_comma_separated_server_list():
    cfg = BackendConfig(kind="openai", model="m", base_url="http://127.0.0.1:1/v1/, http://127.0.0.1:2/v1")
    assert make_backend(cfg).base_urls == ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"]
    assert make_backend(cfg.model_copy(update={"base_url": None})).base_urls == ["https://api.openai.com/v1"]
    with pytest.raises(ValueError, match="model"):
        make_backend(BackendConfig(kind="openai"))


def test_api_key_never_leaks(fault_server, monkeypatch, caplog, capsys, tmp_path):
    secret = "sk-test-" + secrets.token_hex(16)
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    caplog.set_level(logging.DEBUG)
    cfg = BackendConfig(kind="openai", model="fault-model", max_retries=5, timeout=4.0)
    schedule = {0: ["429", "ok"], 1: ["500", "ok"], 2: ["drop", "ok"], 3: ["slow", "ok"], 4: ["400echo"]}
    with fault_server(schedule, retry_after=0.05) as server:
        backend = make_backend(cfg.model_copy(update={"base_url": server.url}))
        backend.backoff_base, backend.backoff_cap = 0.01, 0.05
        texts = backend.generate([f"req-{i}" for i in range(4)], GenerationConfig(), progress=True)
        with pytest.raises(BackendError, match="HTTP 400") as failure:
            backend.generate(["req-4"], GenerationConfig(), progress=False)
        print(repr(backend), backend, failure.value)
    assert texts == [f"answer-{i}" for i in range(4)]
    assert server.authorizations and all(a == f"Bearer {secret}" for a in server.authorizations)
    assert "HTTP 400" in str(failure.value) and "Bearer ***" in str(failure.value)
    assert "retrying" in caplog.text
    dump_config(cfg, tmp_path / "backend.yaml")
    (tmp_path / "outputs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    captured = capsys.readouterr()
    written = "".join(p.read_text() for p in tmp_path.iterdir())
    for place in (caplog.text, captured.out, captured.err, written, repr(backend), str(failure.value)):
        assert secret not in place
    assert "OPENAI_API_KEY" in (tmp_path / "backend.yaml").read_text()

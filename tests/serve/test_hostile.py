"""What a hostile client tried against `personalign serve --memory` (issue "serving for real"), each
answered with a clear 4xx in OpenAI's error shape, never a 500, a stall or a leaked secret."""
from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from personalign.memory.store import MemoryStore
from personalign.serve.app import create_app, serve_in_background

KEYS = {"ann-key": "ann"}


@pytest.fixture()
def server(tiny_backend, memory_url):
    """A memory server on SQLite, then on PostgreSQL: 64 tokens at most per choice, 20 kB bodies."""
    store = MemoryStore(memory_url)
    app = create_app(tiny_backend, view="ica", memory=store, api_key="admin", user_keys=KEYS, model_name="tiny",
                     max_body_bytes=20_000, max_tokens_limit=64)
    with serve_in_background(app) as url:
        yield url, store
    store.close()


def post(url: str, path: str, body: dict | None = None, key: str = "admin", **kw) -> httpx.Response:
    return httpx.post(url + path, json=body, headers={"Authorization": f"Bearer {key}", **kw.pop("headers", {})},
                      timeout=60, **kw)


def chat_body(**fields) -> dict:
    return {"model": "tiny", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi?"}], **fields}


def openai_error(r: httpx.Response, status: int, needle: str) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert needle in err["message"] and err["type"] == "invalid_request_error", err


@pytest.mark.parametrize(("fields", "needle"), [
    ({"max_tokens": 10**9}, "max_tokens must be at most 64"),
    ({"max_completion_tokens": 10**30}, "max_tokens must be at most 64"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"seed": 2**64}, "seed"),
    ({"temperature": float("inf")}, "temperature"),
    ({"temperature": 7.0}, "temperature"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]}, "`text` as a string"),
])
def test_generation_settings_out_of_range_are_400_not_500_or_a_stall(server, fields, needle):
    url, _ = server
    r = httpx.post(url + "/chat/completions", content=json.dumps(chat_body(**fields)).encode(),  # Infinity as JS writes it
                   headers={"Authorization": "Bearer admin", "Content-Type": "application/json"}, timeout=60)
    openai_error(r, 400, needle)
    assert post(url, "/chat/completions", chat_body()).status_code == 200  # the server still answers


def test_errors_of_routing_and_parsing_have_openai_shape_and_bearer_is_case_insensitive(server):
    url, _ = server
    openai_error(httpx.get(url + "/nowhere", headers={"Authorization": "Bearer admin"}), 404, "Not Found")
    openai_error(httpx.get(url + "/chat/completions", headers={"Authorization": "Bearer admin"}), 405, "Not Allowed")
    r = httpx.post(url + "/chat/completions", content=b"{not json", timeout=60,
                   headers={"Authorization": "Bearer admin", "Content-Type": "application/json"})
    openai_error(r, 400, "invalid request")
    assert post(url, "/chat/completions", chat_body(), headers={"Authorization": "bearer admin"}).status_code == 200
    assert post(url, "/chat/completions", chat_body(), headers={"Authorization": "BEARER  admin"}).status_code == 200
    assert post(url, "/chat/completions", chat_body(), headers={"Authorization": "Basic admin"}).status_code == 401


def test_a_request_id_reused_for_different_content_is_409_and_long_idempotency_keys_are_refused(server):
    url, store = server
    first = post(url, "/feedback", {"user": "ann", "prompt": "p", "chosen": "a", "rejected": "b", "request_id": "r1"})
    again = post(url, "/feedback", {"user": "ann", "prompt": "p", "chosen": "a", "rejected": "b", "request_id": "r1"})
    assert first.json()["created"] and not again.json()["created"] and first.json()["id"] == again.json()["id"]
    other = post(url, "/feedback", {"user": "ann", "prompt": "p", "comment": "something else", "request_id": "r1"})
    assert other.status_code == 409 and "already used for a different pair" in other.json()["error"]["message"]
    long_key = post(url, "/feedback", {"user": "ann", "prompt": "q", "comment": "c"},
                    headers={"Idempotency-Key": "k" * 100_000})
    openai_error(long_key, 400, "Idempotency-Key over 200 characters")
    assert store.counts()["items"] == 1


def test_a_body_is_not_read_without_a_key_and_a_chunked_one_is_cut_at_the_limit(server):
    """Without a key the answer is 401 before any body byte counts; with one, a chunked body over the
    limit gets 413 as soon as the limit is passed, not after the whole upload."""
    url, store = server

    def chunks(n: int):
        for _ in range(n):
            yield b"x" * 10_000

    r = httpx.post(url + "/feedback", content=chunks(3), headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 401
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:  # 2 chunks over the limit, then silence
        s.sendall(b"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer admin\r\n"
                  b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(3):
            s.sendall(b"2710\r\n" + b"y" * 10_000 + b"\r\n")
        reply = s.recv(4096).decode()  # answered although the body never ended
    assert reply.startswith("HTTP/1.1 413"), reply[:200]
    assert store.counts()["items"] == 0


def test_twenty_concurrent_first_writes_for_a_new_user_all_succeed(server):
    url, store = server
    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(lambda k: post(url, "/feedback", {"user": "newcomer", "prompt": f"q{k}",
                                                                  "comment": f"c{k}"}), range(20)))
    assert [r.status_code for r in replies] == [200] * 20
    assert store.counts() == {"users": 1, "items": 20}


@pytest.mark.parametrize("url", ["postgresql://me:s3cret@localhost", "postgresql://me:s3cret@/db?password=p4ss",
                                 "postgresql://localhost/db?password=p4ss&sslmode=require", "me:s3cret@localhost/db"])
def test_malformed_memory_urls_never_echo_a_password(url):
    from typer.testing import CliRunner

    from personalign.cli import app

    res = CliRunner().invoke(app, ["data", "export-memory", "--memory", url, "--out", "/tmp/never.jsonl"])
    assert res.exit_code == 2 and "s3cret" not in res.output and "p4ss" not in res.output, res.output


def test_a_message_that_crowds_out_the_history_is_not_reported_as_using_memory(tiny_backend, tmp_path):
    """With a 96-token prompt budget, a long message leaves no room for the user's history: the header
    says `none`, not `used`; a short one keeps the newest items and says `truncated` when some were dropped."""
    store = MemoryStore(f"sqlite:///{tmp_path / 'u.db'}")
    for k in range(6):
        store.add_comment("ann", f"post {k}", "I like long walks by the sea. " * 3)
    app = create_app(tiny_backend, view="ica", memory=store, api_key="admin", model_name="tiny", max_prompt_tokens=96)
    with serve_in_background(app) as url:
        def header(text: str) -> str:
            body = chat_body(user="ann", messages=[{"role": "user", "content": text}])
            return post(url, "/chat/completions", body).headers["X-Personalign-Memory"]

        assert header("Hi?") == "truncated"
        assert header("Tell me about this: " + "a very long question " * 30) == "none"
    store.close()


def test_a_content_length_larger_than_the_body_is_answered_408_not_held_open(tiny_backend):
    """A client that announces 100 bytes and sends 10 gets 408 once the body timeout passes (the connection is
    not held open waiting for bytes that never come), and the server goes on answering others."""
    app = create_app(tiny_backend, model_name="tiny", body_timeout=0.5)
    with serve_in_background(app) as url:
        host, port = url.removeprefix("http://").split("/")[0].split(":")
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n" + b'{"prompt":')
            reply = b""
            while b"Content-Length" not in reply and (chunk := s.recv(4096)):  # headers and body may come apart
                reply += chunk
            reply = reply.decode()
        assert reply.startswith("HTTP/1.1 408"), reply[:200]
        assert "Content-Length" in reply
        r = httpx.post(url + "/completions", json={"prompt": "Hi", "max_tokens": 2}, timeout=60)
        assert r.status_code == 200, r.text

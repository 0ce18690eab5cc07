"""`personalign serve --memory`: chats rendered from each user's memory, feedback, history, deletion, scoped keys."""
from __future__ import annotations

import json
import sqlite3

import httpx
import pytest

from personalign.memory.store import MemoryStore
from personalign.records.io import read_examples, write_jsonl
from personalign.serve.app import create_app, serve_in_background
from personalign.views.build import ViewConfig, build_view

KEYS = {"ann-key": "ann", "bob-key": "bob"}


@pytest.fixture()
def server(tiny_backend, tmp_path):
    store = MemoryStore(f"sqlite:///{tmp_path / 'users.db'}")
    app = create_app(tiny_backend, view="ica", memory=store, api_key="admin", user_keys=KEYS, echo_prompt=True,
                     model_name="tiny", max_body_bytes=20_000)
    with serve_in_background(app) as url:
        yield url, store, tmp_path / "users.db"


def call(url: str, method: str, path: str, key: str = "admin", **kwargs) -> httpx.Response:
    return httpx.request(method, url + path, headers={"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})},
                         timeout=60, **kwargs)


def chat(url: str, key: str = "admin", headers: dict | None = None, **body) -> httpx.Response:
    return call(url, "POST", "/chat/completions", key, headers=headers or {}, json={"model": "tiny", "max_tokens": 2, "temperature": 0,
                                                               "messages": [{"role": "user", "content": "Any tip?"}],
                                                               **body})


def test_feedback_is_used_by_the_next_chat_exactly_as_training_renders_it(server, tiny_backend, tmp_path):
    url, store, _ = server
    first = chat(url, user="ann")
    assert first.status_code == 200 and first.headers["X-Personalign-Memory"] == "none"
    r = call(url, "POST", "/feedback", json={"user": "ann", "prompt": "Weekend plan?", "chosen": "A hike.",
                                              "rejected": "Stay in."})
    assert r.status_code == 200 and r.json()["created"] is True
    call(url, "POST", "/feedback", json={"user": "ann", "prompt": "Lisbon trip", "comment": "Loved the trams."})
    second = chat(url, user="ann")
    assert second.headers["X-Personalign-Memory"] == "used"
    prompt = second.json()["personalign"]["prompts"][0]
    assert "A hike." in prompt and "Loved the trams." in prompt and "Any tip?" in prompt
    # the same prompt as a training record with that history, rendered by the training code
    write_jsonl([{"prompt": "Any tip?", "chosen": "x", "rejected": "y",
                  "User-Generated Content": [{"prompt": "Lisbon trip", "comment": "Loved the trams."}],
                  "Pair-wise Comparative Feedback": [{"prompt": "Weekend plan?", "chosen": "A hike.",
                                                     "rejected": "Stay in."}]}], tmp_path / "rec.jsonl")
    (ex,) = read_examples(tmp_path / "rec.jsonl")
    assert prompt == build_view(ex, ViewConfig(view="ica", max_length=2048), tiny_backend.tokenizer).prompt
    assert chat(url, headers={"X-User-Id": "ann"}).headers["X-Personalign-Memory"] == "used"


def test_history_and_retried_feedback_count_once(server):
    url, _, _ = server
    body = {"user": "bob", "prompt": "p", "chosen": "a", "rejected": "b", "request_id": "req-1"}
    ids = {call(url, "POST", "/feedback", json=body).json()["id"] for _ in range(3)}
    again = call(url, "POST", "/feedback", headers={"Idempotency-Key": "req-2"},
                 json={"user": "bob", "prompt": "q", "comment": "c"})
    call(url, "POST", "/feedback", headers={"Idempotency-Key": "req-2"}, json={"user": "bob", "prompt": "q", "comment": "c"})
    history = call(url, "GET", "/users/bob/history").json()["history"]
    assert len(ids) == 1 and again.status_code == 200
    assert [(h["kind"], h["prompt"]) for h in history] == [("pair", "p"), ("comment", "q")]
    assert call(url, "GET", "/users/nobody/history").status_code == 404


def test_scoped_keys_touch_only_their_own_user(server):
    url, _, _ = server
    assert call(url, "POST", "/feedback", "ann-key", json={"prompt": "p", "comment": "mine"}).status_code == 200
    assert call(url, "POST", "/feedback", "ann-key",
                json={"user": "bob", "prompt": "p", "comment": "not mine"}).status_code == 403
    assert call(url, "GET", "/users/bob/history", "ann-key").status_code == 403
    assert call(url, "DELETE", "/users/bob", "ann-key").status_code == 403
    assert chat(url, "ann-key", user="bob").status_code == 403
    assert chat(url, "ann-key", headers={"X-User-Id": "bob"}).status_code == 403
    assert call(url, "GET", "/users/ann/history", "ann-key").json()["history"][0]["comment"] == "mine"
    assert chat(url, "ann-key").headers["X-Personalign-Memory"] == "used"  # a scoped key acts for its user
    assert call(url, "GET", "/users/ann/history", "wrong").status_code == 401
    assert call(url, "GET", "/users/bob/history", "admin").status_code == 404  # nothing was written for bob


def test_deleting_a_user_erases_every_trace(server):
    url, store, db = server
    for user in ("ann", "bob"):
        call(url, "POST", "/feedback", json={"user": user, "prompt": f"{user}-q", "chosen": "a", "rejected": "b"})
    store.set_user("ann", persona="ann-persona")
    r = call(url, "DELETE", "/users/ann")
    assert r.status_code == 200 and r.json()["deleted"] is True
    with sqlite3.connect(db) as conn:
        dump = json.dumps([conn.execute(f"SELECT * FROM {t}").fetchall() for t in ("users", "items")])
    assert "ann" not in dump and "bob-q" in dump
    assert call(url, "GET", "/users/ann/history").status_code == 404
    assert chat(url, user="ann").headers["X-Personalign-Memory"] == "none"


@pytest.mark.parametrize("evil", ["x'); DROP TABLE items; --", "1 OR 1=1", "a/b", "🙂 ' \" ;"])
def test_injection_attempts_in_user_ids_and_texts_are_plain_text(server, evil):
    url, store, _ = server
    r = call(url, "POST", "/feedback", json={"user": evil, "prompt": evil, "chosen": evil + "!", "rejected": evil})
    assert r.status_code == 200
    assert store.history(evil)["history"][0]["prompt"] == evil
    assert store.counts()["users"] == 1 and store.user_context("other") is None
    if "/" not in evil:
        path = "/users/" + httpx.URL("http://x/" + evil).raw_path.decode().lstrip("/") + "/history"
        assert call(url, "GET", path).json()["history"][0]["chosen"] == evil + "!"


def test_oversized_bodies_and_malformed_feedback_are_refused(server):
    url, store, _ = server
    big = call(url, "POST", "/feedback", json={"user": "ann", "prompt": "p" * 30_000, "comment": "c"})
    assert big.status_code == 413
    for body in ({"user": "ann", "prompt": "p"}, {"user": "ann", "prompt": "p", "chosen": "a"},
                 {"user": "ann", "prompt": "p", "chosen": "a", "rejected": "b", "comment": "c"},
                 {"prompt": "p", "comment": "c"}, {"user": "", "prompt": "p", "comment": "c"}):
        assert call(url, "POST", "/feedback", json=body).status_code == 400, body
    assert store.counts() == {"users": 0, "items": 0}


def test_a_server_without_memory_has_no_user_routes(served):
    r = httpx.post(served + "/feedback", json={"user": "ann", "prompt": "p", "comment": "c"}, timeout=30)
    assert r.status_code == 404


def test_a_pba_server_builds_the_profile_from_stored_direction_vectors(tiny_backend, tmp_path):
    store = MemoryStore(f"sqlite:///{tmp_path / 'users.db'}")
    app = create_app(tiny_backend, view="pba", memory=store, echo_prompt=True, model_name="tiny")
    direction = [0.5] * 90
    direction[0], direction[5] = 1, 0
    with serve_in_background(app) as url:
        for k in range(2):
            r = httpx.post(url + "/feedback", timeout=30, json={"user": "ann", "prompt": f"q{k}", "chosen": "a",
                                                                  "rejected": "b", "direction": direction})
            assert r.status_code == 200
        reply = chat(url, user="ann")
        bad = httpx.post(url + "/feedback", timeout=30, json={"user": "ann", "prompt": "q", "chosen": "a",
                                                                "rejected": "b", "direction": [2] * 90})
    assert reply.headers["X-Personalign-Memory"] == "used" and bad.status_code == 400
    write_jsonl([{"prompt": "Any tip?", "chosen": "x", "rejected": "y", "Pair-wise Comparative Feedback": [
        {"prompt": f"q{k}", "chosen": "a", "rejected": "b", "Preference Direction": direction} for k in range(2)]}],
        tmp_path / "rec.jsonl")
    (ex,) = read_examples(tmp_path / "rec.jsonl")
    expected = build_view(ex, ViewConfig(view="pba", max_length=2048), tiny_backend.tokenizer)
    assert expected.missing is None
    assert reply.json()["personalign"]["prompts"][0] == expected.prompt


def test_persona_refresh_after_n_pairs_in_the_background_and_never_resurrects_a_deleted_user(tiny_backend, tmp_path):
    import time

    from personalign.serve.memory import PersonaRefresher

    store = MemoryStore(f"sqlite:///{tmp_path / 'users.db'}")
    seen = []

    def infer(pair):
        seen.append(pair.prompt)
        return f"The user cares about {pair.prompt}."

    refresher = PersonaRefresher(store, infer, every=2)
    app = create_app(tiny_backend, view="persona", memory=store, echo_prompt=True, model_name="tiny",
                     persona_refresh=refresher)
    with serve_in_background(app) as url:
        for k in range(3):
            httpx.post(url + "/feedback", timeout=30, json={"user": "ann", "prompt": f"topic-{k}", "chosen": "a",
                                                              "rejected": "b", "request_id": f"r{k}"})
        httpx.post(url + "/feedback", timeout=30, json={"user": "ann", "prompt": "topic-1", "chosen": "a",
                                                          "rejected": "b", "request_id": "r1"})  # a retry: not new
        deadline = time.monotonic() + 10
        while store.history("ann")["persona"] is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.history("ann")["persona"] == "The user cares about topic-1."  # after the 2nd new pair
        reply = chat(url, user="ann")
        assert "The user cares about topic-1." in reply.json()["personalign"]["prompts"][0]
        assert reply.headers["X-Personalign-Memory"] == "used"
        assert seen == ["topic-1"]
        httpx.delete(url + "/users/ann", timeout=30)
    assert refresher.refresh("ann") is None and store.history("ann") is None  # deleted stays deleted


def test_persona_of_infers_with_the_persona_inference_prompt(tiny_backend):
    from personalign.persona.infer import DEFAULT_GENERATION, parse_persona, persona_of
    from personalign.persona.prompts import infer_messages

    (raw,) = tiny_backend.generate([infer_messages("Weekend?", "A hike.", "Stay in.")], DEFAULT_GENERATION,
                                   progress=False)
    assert persona_of(tiny_backend, "Weekend?", "A hike.", "Stay in.") == (parse_persona(raw).persona or None)


def test_serve_refuses_persona_refresh_and_memory_views_without_memory():
    from typer.testing import CliRunner

    from personalign.cli import app as cli

    for args, needle in ((["--persona-refresh", "2"], "--persona-refresh"), (["--view", "ica"], "--view")):
        res = CliRunner().invoke(cli, ["serve", *args])
        assert res.exit_code == 2 and needle in res.output and "--memory" in res.output


@pytest.mark.parametrize("recreate", [False, True])
def test_a_refresh_racing_a_delete_never_gives_the_old_persona_to_the_user(memory_url, recreate):
    """The inference runs while the user is deleted (and, the known race, created again with new feedback):
    the persona inferred from the old history is written to no one; a refresh that starts afterwards
    works from the new history."""
    import threading

    from personalign.serve.memory import PersonaRefresher

    store = MemoryStore(memory_url)
    store.add_pair("ann", "old topic", "a", "b")
    started, go_on = threading.Event(), threading.Event()

    def infer(pair):
        started.set()
        go_on.wait(30)
        return f"The user cares about {pair.prompt}."

    refresher = PersonaRefresher(store, infer, every=1)
    pending = refresher.pair_added("ann")
    assert started.wait(30)
    store.delete_user("ann")
    if recreate:
        store.add_pair("ann", "new topic", "c", "d")
    go_on.set()
    assert pending.result(30) is None
    assert (store.history("ann") or {}).get("persona") is None
    if recreate:
        assert refresher.refresh("ann") == "The user cares about new topic."
        assert store.history("ann")["persona"] == "The user cares about new topic."
    refresher.close()
    store.close()

"""`personalign serve --user-model`: each user's state refitted on every new pair before the reply,
`/v1/rewards` under it, reranked chats, inferred directions, and deletion of the state with the user."""
from __future__ import annotations

import json

import httpx
import pytest

from personalign.memory.store import MemoryStore
from personalign.serve.adapt import OnlineUsers
from personalign.serve.app import create_app, serve_in_background

KEYS = {"ann-key": "ann", "bob-key": "bob"}


@pytest.fixture(scope="module")
def directions(synth_users, tmp_path_factory):
    from personalign.users.directions import DirectionsConfig, train_directions

    out = tmp_path_factory.mktemp("directions") / "model"
    train_directions(DirectionsConfig(data=str(synth_users["train"]), out=str(out), max_steps=150))
    return out


@pytest.fixture()
def server(tiny_backend, synth_users, directions, tmp_path):
    store = MemoryStore(f"sqlite:///{tmp_path / 'users.db'}")
    online = OnlineUsers(synth_users["latent"], store, directions=directions)
    app = create_app(tiny_backend, view="pba", memory=store, api_key="admin", user_keys=KEYS, user_model=online,
                     rerank=3, model_name="tiny")
    with serve_in_background(app) as url:
        yield url, store, online


def call(url, method, path, key="admin", **kwargs):
    return httpx.request(method, url + path, headers={"Authorization": f"Bearer {key}"}, timeout=120, **kwargs)


def held_out_pairs(synth_users, n):
    records = [json.loads(line) for line in synth_users["test"].read_text().splitlines()]
    return [(p["prompt"], p["chosen"], p["rejected"]) for r in records[:n] for p in r["Pair-wise Comparative Feedback"]]


def test_opposite_feedback_gives_opposite_orderings_after_four_pairs(server, synth_users):
    url, store, online = server
    record = json.loads(synth_users["test"].read_text().splitlines()[0])
    history = record["Pair-wise Comparative Feedback"]
    probe = {"prompt": record["prompt"], "responses": [record["chosen"], record["rejected"]]}
    before = call(url, "POST", "/rewards", json={"user": "ann", **probe}).json()
    assert before["fitted_on_pairs"] == 0  # the population state
    for i, p in enumerate(history):  # ann prefers what the record's user preferred, bob the opposite
        a = call(url, "POST", "/feedback", "ann-key", json={"user": "ann", "prompt": p["prompt"], "chosen": p["chosen"],
                                                             "rejected": p["rejected"]})
        b = call(url, "POST", "/feedback", "bob-key", json={"user": "bob", "prompt": p["prompt"],
                                                             "chosen": p["rejected"], "rejected": p["chosen"]})
        assert a.status_code == b.status_code == 200
        assert a.json()["refit"]["pairs"] == i + 1 and a.json()["refit"]["stored"]  # refitted before the reply
        assert store.get_state("ann", online.key)[1] == i + 1
    ann = call(url, "POST", "/rewards", "ann-key", json={"user": "ann", **probe}).json()
    bob = call(url, "POST", "/rewards", "bob-key", json={"user": "bob", **probe}).json()
    assert ann["fitted_on_pairs"] == bob["fitted_on_pairs"] == 4
    assert (ann["rewards"][0] > ann["rewards"][1]) and (bob["rewards"][0] < bob["rewards"][1]), (ann, bob)
    # a pba server renders a profile from the inferred directions of pairs that came without any
    assert all(len(item["direction"]) == 90 for item in store.history("ann")["history"])
    # scoping: bob's key cannot read ann's rewards
    assert call(url, "POST", "/rewards", "bob-key", json={"user": "ann", **probe}).status_code == 403
    chat = call(url, "POST", "/chat/completions", "ann-key", json={
        "user": "ann", "max_tokens": 4, "return_candidates": True,
        "messages": [{"role": "user", "content": record["prompt"]}]}).json()
    candidates = chat["personalign"]["candidates"]
    assert len(candidates) == 3 and chat["choices"][0]["message"]["content"] == max(
        candidates, key=lambda c: c["reward"])["text"]
    assert call(url, "DELETE", "/users/ann").json()["deleted"]
    assert store.get_state("ann", online.key) is None and store.get_state("bob", online.key) is not None


def test_rewards_refuse_bad_bodies(server):
    url, _, _ = server
    assert call(url, "POST", "/rewards", json={"user": "ann", "prompt": "p", "responses": []}).status_code == 400
    assert call(url, "POST", "/rewards", json={"user": "ann", "prompt": "p", "responses": ["a"] * 17}).status_code == 400
    assert call(url, "POST", "/rewards", json={"user": "ann", "responses": ["a"]}).status_code == 400


@pytest.mark.parametrize("args, needle", [
    (["--user-model", "x"], "need --memory"),
    (["--memory", "sqlite:///{tmp}/u.db", "--rerank", "3"], "need --user-model"),
    (["--memory", "sqlite:///{tmp}/u.db", "--user-model", "{tmp}"], "not a user-model directory"),
])
def test_serve_refuses_user_model_options_it_cannot_honour(args, needle, tmp_path):
    from typer.testing import CliRunner

    from personalign.cli import app

    res = CliRunner().invoke(app, ["serve", *[a.format(tmp=tmp_path) for a in args]])
    assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output, res.output

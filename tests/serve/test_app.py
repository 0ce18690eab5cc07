"""`personalign serve` over a tiny model: our HTTP backend, the official openai client, batching, errors."""
from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest
from typer.testing import CliRunner

from personalign.cli import app as cli_app
from personalign.llm import GenerationConfig
from personalign.llm.local import LocalBackend
from personalign.llm.openai_http import OpenAIBackend
from personalign.serve.app import create_app, serve_in_background
from personalign.views.templates import render_prompt

GREEDY = GenerationConfig(max_new_tokens=6)
PERSONA = "The user is a busy parent who wants quick, practical advice."


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served, api_key="unused", max_retries=0, timeout=60)


def test_http_backend_against_serve_matches_local_generation(served, tiny_backend):
    chats = [[{"role": "user", "content": f"Question {i}: {'why ' * i}is the sky blue?"}] for i in range(10)]
    backend = OpenAIBackend("tiny", served, concurrency=6, timeout=60)
    assert backend.generate(chats, GREEDY, progress=False) == tiny_backend.generate(chats, GREEDY, progress=False)
    raw = [f"Prompt {i}: tell me {'more ' * i}" for i in range(6)]
    completions = OpenAIBackend("tiny", served, endpoint="completions", concurrency=6, timeout=60)
    assert completions.generate(raw, GREEDY, progress=False) == tiny_backend.generate(raw, GREEDY, progress=False)


def test_openai_client_models_chat_and_completions(client, tiny_backend):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    messages = [{"role": "user", "content": "Give me three tips for learning to cook."}]
    chat = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0)
    (expected,) = tiny_backend.complete([messages], GREEDY)
    assert chat.object == "chat.completion"
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content == expected.text
    assert chat.choices[0].finish_reason == expected.finish_reason
    assert chat.usage.prompt_tokens == expected.prompt_tokens
    assert chat.usage.total_tokens == expected.prompt_tokens + expected.completion_tokens
    text = client.completions.create(model="tiny", prompt="The weather today is", max_tokens=6, temperature=0)
    assert text.object == "text_completion"
    assert text.choices[0].text == tiny_backend.generate(["The weather today is"], GREEDY, progress=False)[0]
    assert text.model_extra["personalign"]["prompts"] == ["The weather today is"]


def test_persona_changes_the_rendered_prompt(client, tiny_backend):
    tok = tiny_backend.tokenizer
    task = "How do I fix a slow computer?"
    messages = [{"role": "user", "content": task}]

    def prompt(**kwargs):
        reply = client.chat.completions.create(model="tiny", max_tokens=2, temperature=0, **kwargs)
        return reply.model_extra["personalign"]["prompts"][0]

    plain = prompt(messages=messages)
    personal = prompt(messages=messages, extra_body={"persona": PERSONA})
    assert plain == tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert personal == render_prompt("chat", "persona", task, PERSONA, tokenizer=tok)
    assert f"# Task\n{task}\n\n# User persona\n{PERSONA}" in personal
    assert prompt(messages=[{"role": "system", "content": PERSONA}, *messages]) == personal
    completion = client.completions.create(model="tiny", prompt=task, max_tokens=2, extra_body={"persona": PERSONA})
    assert completion.model_extra["personalign"]["prompts"] == [personal]


def test_streaming_answers_with_server_sent_events(client):
    messages = [{"role": "user", "content": "Tell me a joke about cats."}]
    full = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0)
    chunks = list(client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=6, temperature=0, stream=True, stream_options={"include_usage": True}
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == full.choices[0].finish_reason
    assert chunks[-1].usage.total_tokens == full.usage.total_tokens


def test_bad_requests_get_openai_errors(client):
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError, match="n must be between 1 and 16"):
        client.chat.completions.create(model="tiny", messages=messages, n=17)
    with pytest.raises(openai.BadRequestError, match="profile"):
        client.chat.completions.create(model="tiny", messages=messages, extra_body={"profile": "concise"})
    with pytest.raises(openai.BadRequestError, match="last message"):
        client.chat.completions.create(model="tiny", messages=[{"role": "assistant", "content": "hello"}])
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model="tiny", messages=messages, max_tokens=-1)
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="tiny", messages=[])
    with pytest.raises(openai.BadRequestError, match="prompt"):
        client.completions.create(model="tiny", prompt=["fine", ""])


def test_n_choices_sampled_and_streamed(client):
    messages = [{"role": "user", "content": "Name a colour."}]
    reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=1.0, n=2, seed=3)
    assert [c.index for c in reply.choices] == [0, 1]
    greedy = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0, n=2)
    assert greedy.choices[0].message.content == greedy.choices[1].message.content  # greedy: the same twice
    one = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0)
    assert greedy.usage.prompt_tokens == one.usage.prompt_tokens  # the prompt is counted once, as OpenAI does
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0, n=2,
                                                 stream=True))
    by_index: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            by_index[choice.index] = by_index.get(choice.index, "") + (choice.delta.content or "")
    assert by_index == {0: one.choices[0].message.content, 1: one.choices[0].message.content}
    text = client.completions.create(model="tiny", prompt=["a", "b"], max_tokens=4, temperature=0, n=2)
    assert len(text.choices) == 4 and text.choices[0].text == text.choices[1].text


def test_api_key_is_required_when_set(tiny_backend, caplog):
    app = create_app(tiny_backend, view="persona", max_batch=2, model_name="tiny", api_key="s3cret-key")
    with serve_in_background(app) as url:
        messages = [{"role": "user", "content": "hi"}]
        bad = openai.OpenAI(base_url=url, api_key="wrong", max_retries=0, timeout=60)
        with pytest.raises(openai.AuthenticationError, match="API key"):
            bad.chat.completions.create(model="tiny", messages=messages, max_tokens=2)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        missing = httpx.post(f"{url}/chat/completions", json={"messages": messages}, timeout=60)
        assert missing.status_code == 401 and "Bearer" in missing.json()["error"]["message"]
        good = openai.OpenAI(base_url=url, api_key="s3cret-key", max_retries=0, timeout=60)
        assert good.chat.completions.create(model="tiny", messages=messages, max_tokens=2).choices
        streamed = list(good.chat.completions.create(model="tiny", messages=messages, max_tokens=2, stream=True))
        assert streamed and streamed[-1].choices[0].finish_reason
    assert "s3cret-key" not in caplog.text


class RecordingBackend(LocalBackend):
    """Records the size of every batch the server generates."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches: list[int] = []
        self.lock = threading.Lock()

    def decodings(self, requests, config, on_tokens=None, **kwargs):
        with self.lock:
            self.batches.append(len(requests))
        return super().decodings(requests, config, on_tokens, **kwargs)


def test_concurrent_requests_are_batched(tiny_lm):
    backend = RecordingBackend(*tiny_lm, batch_size=4)
    app = create_app(backend, view="none", max_batch=4, batch_window=1.0)
    chats = [[{"role": "user", "content": f"Question number {i}"}] for i in range(8)]
    with serve_in_background(app) as url:
        texts = OpenAIBackend("tiny", url, concurrency=8, timeout=60).generate(chats, GREEDY, progress=False)
    assert texts == LocalBackend(*tiny_lm, batch_size=1).generate(chats, GREEDY, progress=False)
    assert sum(backend.batches) == 8
    assert max(backend.batches) > 1 and all(n <= 4 for n in backend.batches)


class FailingBackend(LocalBackend):
    def decodings(self, requests, config, on_tokens=None, **kwargs):
        if any("boom" in r for r in requests):
            raise RuntimeError("boom")
        return super().decodings(requests, config, on_tokens, **kwargs)


def test_a_failed_generation_is_an_openai_error_and_serving_goes_on(tiny_lm):
    with serve_in_background(create_app(FailingBackend(*tiny_lm), view="none")) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
        with pytest.raises(openai.InternalServerError, match="RuntimeError: boom"):
            client.completions.create(model="tiny", prompt="boom", max_tokens=2)
        assert client.completions.create(model="tiny", prompt="fine", max_tokens=2).choices[0].finish_reason


def test_serve_command_is_registered_and_checks_its_options():
    runner = CliRunner()
    shown = runner.invoke(cli_app, ["serve", "--help"])
    assert shown.exit_code == 0 and "--max-batch" in shown.output
    bad = runner.invoke(cli_app, ["serve", "--view", "ica", "--model", "/nonexistent"])
    assert bad.exit_code == 2 and "view" in bad.output


class EndlessBackend(LocalBackend):
    """Never ends a choice by EOS (a choice runs to max_tokens unless stopped), and counts decoding steps."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps = 0

    def _eos_ids(self) -> list[int]:
        return []

    def _forward(self, *args, **kwargs):
        self.steps += 1
        return super()._forward(*args, **kwargs)


def test_streamed_tokens_arrive_as_they_are_generated(tiny_lm):
    """Several content chunks reach an OpenAI client before the finish chunk, and together they are the
    non-streamed answer; chat and text completions alike."""
    backend = EndlessBackend(*tiny_lm, batch_size=4)
    with serve_in_background(create_app(backend, view="none", model_name="tiny")) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
        messages = [{"role": "user", "content": "Count to ten."}]
        whole = client.chat.completions.create(model="tiny", messages=messages, max_tokens=24, temperature=0)
        chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=24, temperature=0,
                                                     stream=True, stream_options={"include_usage": True}))
        contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        finishes = [i for i, c in enumerate(chunks) if c.choices and c.choices[0].finish_reason]
        assert len(contents) > 1 and finishes == [len(chunks) - 2]  # then the usage chunk
        assert "".join(contents) == whole.choices[0].message.content
        assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens == 24
        text = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=16, temperature=0)
        parts = [c.choices[0].text for c in client.completions.create(
            model="tiny", prompt="Once upon a time", max_tokens=16, temperature=0, stream=True) if c.choices]
        assert len([p for p in parts if p]) > 1 and "".join(parts) == text.choices[0].text


def test_a_client_that_leaves_a_stream_stops_its_generation(tiny_lm):
    """A stream asked for 2000 tokens, read for a few chunks, then dropped: the decoding steps stop growing
    long before 2000, and the server answers the next request."""
    backend = EndlessBackend(*tiny_lm, batch_size=4)
    with serve_in_background(create_app(backend, view="none", model_name="tiny")) as url:
        body = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 2000, "temperature": 0, "stream": True}
        with httpx.stream("POST", url + "/completions", json=body, timeout=60) as r:
            lines = r.iter_lines()
            seen = [line for line, _ in zip(lines, range(6)) if line.startswith("data: ")]
        assert len(seen) >= 3
        deadline = time.monotonic() + 30
        before = -1
        while backend.steps != before and time.monotonic() < deadline:
            before = backend.steps
            time.sleep(0.5)
        assert backend.steps == before < 1000
        assert httpx.post(url + "/completions", json={"prompt": "Hi", "max_tokens": 2}, timeout=60).status_code == 200


def test_a_short_chat_is_answered_while_a_long_one_generates(tiny_lm):
    """Batches run a decoding step each in turn: a short request sent while a 1500-token one generates is
    answered, with the tokens it gets alone, before the long one ends (one batch at a time, it waited)."""
    backend = EndlessBackend(*tiny_lm, batch_size=4)
    with serve_in_background(create_app(backend, view="none", model_name="tiny")) as url:
        long = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 1500, "temperature": 0}
        answers: list[httpx.Response] = []
        worker = threading.Thread(target=lambda: answers.append(httpx.post(url + "/completions", json=long, timeout=120)))
        worker.start()
        deadline = time.monotonic() + 30
        while backend.steps < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        short = httpx.post(url + "/completions", json={"model": "tiny", "prompt": "Hi", "max_tokens": 4, "temperature": 0},
                           timeout=120)
        steps_then, long_running = backend.steps, worker.is_alive()
        worker.join()
    assert short.status_code == 200 and long_running and steps_then < 1500
    assert short.json()["choices"][0]["text"] == backend.complete(["Hi"], GenerationConfig(max_new_tokens=4))[0].text
    assert answers[0].json()["usage"]["completion_tokens"] == 1500

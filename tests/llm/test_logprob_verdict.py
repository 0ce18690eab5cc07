"""The log-prob verdict mode: a judge's preference read from the probabilities of its answers "1"
and "2", averaged over both orders; with the embedded model and with a loopback OpenAI-compatible
server that returns `logprobs`."""
from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from fake_llm import send_json

from personalign.llm.openai_http import OpenAIBackend
from personalign.llm.verdict import ChoiceProbs, order_averaged, read_verdicts
from personalign.persona.judge import persona_accuracy
from personalign.persona.prompts import accuracy_messages
from personalign.records.schema import Example, UserContext
from personalign.records.tokens import prompt_ids


def test_order_averaging_cancels_position_bias():
    # a judge that favours "1" by 0.4 in both orders, but the item still wins once the bias cancels
    shown_first, shown_second = json.dumps([0.9, 0.1]), json.dumps([0.3, 0.7])
    assert order_averaged(shown_first, shown_second) == pytest.approx(0.8)
    assert read_verdicts([shown_first, shown_second], "logprob") == [1, 2]
    assert read_verdicts([shown_second, shown_first], "logprob") == [2, 1]
    always_one = json.dumps([0.8, 0.2])
    assert read_verdicts([always_one, always_one], "logprob") == [None, None]  # pure bias: a tie
    assert read_verdicts([json.dumps(None), always_one], "logprob") == [None, None]
    with pytest.raises(ValueError, match="verdict mode"):
        from personalign.llm.verdict import judge_backend

        judge_backend(object(), "vote")


class _LogprobHandler(BaseHTTPRequestHandler):
    """Answers "1" always (position bias), with top log-probs that favour whichever response holds GOOD."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.server.bodies.append(body)
        text = body["messages"][-1]["content"]
        good_first = text.find("GOOD") < text.find("BAD")
        p1 = 0.9 if good_first else 0.3
        top = [{"token": "1", "logprob": math.log(p1 * 0.5)}, {"token": " 1", "logprob": math.log(p1 * 0.5)},
               {"token": "2", "logprob": math.log(1 - p1)}, {"token": "The", "logprob": -9.0}]
        reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "1"},
                              "logprobs": {"content": [{"token": "1", "logprob": top[0]["logprob"],
                                                        "top_logprobs": top}]}}]}
        send_json(self, reply)


@pytest.fixture()
def logprob_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LogprobHandler)
    server.bodies = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def _records(n: int) -> list[Example]:
    return [Example(f"Question {i}?", [f"GOOD answer {i}", f"BAD answer {i}"],
                    user=UserContext(personas={"chosen_persona": "The user wants good answers.",
                                               "rejected_persona": "The user wants bad answers."}))
            for i in range(n)]


def test_openai_backend_reads_top_logprobs_and_the_judge_cancels_the_bias(logprob_server):
    url = f"http://127.0.0.1:{logprob_server.server_address[1]}/v1"
    backend = OpenAIBackend("judge", url, max_retries=0, timeout=60)
    first = accuracy_messages("p", "q", "GOOD", "BAD")
    [probs] = backend.choice_probs([first], ["1", "2"])
    assert probs == pytest.approx([0.9, 0.1])  # "1" and " 1" summed, other tokens ignored
    sent = logprob_server.bodies[-1]
    assert sent["logprobs"] is True and sent["top_logprobs"] == 20 and sent["max_tokens"] == 1
    # generated text is always "1": chance accuracy; log-probs averaged over both orders: all correct
    by_text = persona_accuracy(_records(3), backend, verdict_mode="generate")
    by_prob = persona_accuracy(_records(3), backend, verdict_mode="logprob")
    assert by_text.accuracy.value == pytest.approx(0.5)
    assert by_prob.accuracy.value == 1.0 and by_prob.unparseable == 0
    rejected = persona_accuracy(_records(3), backend, persona_field="rejected_persona", verdict_mode="logprob")
    assert rejected.accuracy.value == 0.0  # the server always prefers GOOD, the rejected persona's target is BAD


@pytest.mark.duration(18)
def test_local_choice_probs_match_a_plain_forward_with_the_embedded_model(default_model_dir):
    from personalign.llm.local import LocalBackend
    from personalign.models.loading import load_model

    model, tok = load_model(default_model_dir)
    backend = LocalBackend(model, tok, batch_size=2)
    requests = [accuracy_messages("The user loves cats.", "Pick a pet.", "A cat.", "A dog."),
                accuracy_messages("The user loves cats.", "Pick a pet.", "A dog.", "A cat.")]
    got = backend.choice_probs(requests, ["1", "2"])
    for request, probs in zip(requests, got):
        ids = prompt_ids(tok, backend.render(request))
        with torch.no_grad():
            p = model(torch.tensor([ids])).logits[0, -1].float().softmax(-1)
        # each answer's first token, with and without a leading space ("1" and " 1"), summed
        mass = [sum(float(p[i]) for i in {tok(v, add_special_tokens=False)["input_ids"][0] for v in (c, " " + c)})
                for c in ("1", "2")]
        assert probs == pytest.approx([m / sum(mass) for m in mass], abs=1e-4)
    # the adapter serves the generation cache: outputs are JSON and its identity names the mode
    adapter = ChoiceProbs(backend)
    assert json.loads(adapter.generate(requests[:1], None)[0]) == pytest.approx(got[0], abs=1e-6)
    assert adapter.identity.endswith("|choice-probs:1/2")
    result = persona_accuracy(_records(2), backend, verdict_mode="logprob")
    assert result.n_personas == 2 and result.unparseable == 0


def test_result_choice_probs_reason_up_to_the_marker_then_read_a_and_b(tiny_lm):
    """Prometheus-style log-prob verdicts on the local backend: generated up to "[RESULT]" (a stop), then
    the reply continued by the marker (no new generation prompt) and P(A), P(B) of the next token, as
    one plain forward over that text gives them."""
    from personalign.llm.base import GenerationConfig
    from personalign.llm.local import LocalBackend
    from personalign.llm.verdict import ResultChoiceProbs

    model, tok = tiny_lm
    backend = LocalBackend(model, tok, batch_size=2)
    request = [{"role": "system", "content": "Judge."}, {"role": "user", "content": "A or B?"}]
    config = GenerationConfig(max_new_tokens=6, temperature=0.0)
    reason = backend.generate([request], config.model_copy(update={"stop": ["[RESULT]"]}))[0]
    [probs] = [json.loads(o) for o in ResultChoiceProbs(backend, "[RESULT]", ("A", "B")).generate([request], config)]
    text = backend.render([*request, {"role": "assistant", "content": reason + "[RESULT]"}])
    assert text.endswith(reason + "[RESULT]") and text.count("<|im_start|>assistant") == 1
    with torch.no_grad():
        p = model(torch.tensor([prompt_ids(tok, text)])).logits[0, -1].float().softmax(-1)
    mass = [sum(float(p[i]) for i in {tok(v, add_special_tokens=False)["input_ids"][0] for v in (c, " " + c)})
            for c in ("A", "B")]
    assert probs == pytest.approx([m / sum(mass) for m in mass], abs=1e-4)

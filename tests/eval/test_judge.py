"""Pairwise judge: verdict parsing, both-order win/tie/loss counting, win rates and ΔPQ on
hand-computed cases, unparseable outputs, caching and resuming, and the command line."""
from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from fake_llm import send_json
from typer.testing import CliRunner

from personalign.cli import app
from personalign.eval.generate import GENERATIONS_FILE
from personalign.eval.judge import (
    CACHE_FILE,
    RUBRICS,
    judge_messages,
    judge_runs,
    outcome,
    write_judge,
)
from personalign.llm.base import GenerationConfig
from personalign.metrics import bootstrap_win_rates
from personalign.records.io import write_jsonl


class RuleJudge:
    """Answers `rule(response 1, response 2)` to the last user message; raises after `fail_after` requests."""

    def __init__(self, rule: Callable[[str, str], str], identity: str = "rule-judge", fail_after: int | None = None):
        self.rule, self.identity, self.fail_after = rule, identity, fail_after
        self.requests: list = []

    def generate(self, requests: Sequence, config: GenerationConfig, *, progress: bool = True) -> list[str]:
        out = []
        for r in requests:
            if self.fail_after is not None and len(self.requests) >= self.fail_after:
                raise KeyboardInterrupt
            self.requests.append(r)
            m = re.search(r"Response 1: (.*?)\n\nResponse 2: (.*?)\n\n", r[-1]["content"], re.S)
            out.append(self.rule(m.group(1), m.group(2)))
        return out


def longer(first: str, second: str) -> str:
    """Prefers the longer response; "1" on equal lengths."""
    return "2" if len(second) > len(first) else "1"


# (base response, test response, persona): test longer in pairs 0, 1, 4; base longer in 2; equal in 3;
# pair 4 has no persona, so it is not judged for personalization.
CRAFTED = [("a", "aaa", "P0"), ("bb", "bbbb", "P1"), ("cccccc", "c", "P2"), ("dd", "dd", "P3"), ("e", "eeeee", None)]


def write_run(directory: Path, view: str, responses: list[str], personas: list[str | None]) -> Path:
    rows = [{"index": i, "source": f"data.jsonl:{i + 1}", "prompt": f"Prompt {i}?", "view": view, "persona": p,
             "view_prompt": f"Prompt {i}?", "response": r} for i, (r, p) in enumerate(zip(responses, personas))]
    write_jsonl(rows, directory / GENERATIONS_FILE)
    return directory


@pytest.fixture
def runs(tmp_path):
    personas = [p for _, _, p in CRAFTED]
    base = write_run(tmp_path / "base", "none", [b for b, _, _ in CRAFTED], personas)
    test = write_run(tmp_path / "test", "persona", [t for _, t, _ in CRAFTED], personas)
    return base, test


@pytest.mark.parametrize(("base_first", "test_first", "expected"),
                         [(2, 1, 1), (1, 2, -1), (1, 1, 0), (2, 2, 0), (None, 1, 0), (2, None, 0), (None, None, 0)])
def test_outcome_needs_the_same_pick_in_both_orders(base_first, test_first, expected):
    assert outcome(base_first, test_first) == expected


def test_the_prompt_asks_for_1_or_2_under_the_rubric_and_shows_the_persona_only_for_personalization():
    quality = judge_messages("quality", "Q?", "first", "second", persona="The user is a pirate.")
    personal = judge_messages("personalization", "Q?", "first", "second", persona="The user is a pirate.")
    assert RUBRICS["quality"] in quality[0]["content"] and "1 or 2" in quality[0]["content"]
    assert RUBRICS["personalization"] in personal[0]["content"]
    assert "pirate" not in quality[-1]["content"] and "Persona: The user is a pirate." in personal[-1]["content"]
    assert "Response 1: first\n\nResponse 2: second" in quality[-1]["content"]
    assert [m["content"] for m in quality if m["role"] == "assistant"] == ["2", "1"]


def test_a_judge_that_always_answers_1_gives_only_ties(runs):
    result = judge_runs(*runs, RuleJudge(lambda a, b: "1"))
    for name, r in result.rubrics.items():
        assert (r.wins, r.losses, r.unparseable, r.position_first) == (0, 0, 0, 1.0)
        assert r.ties == r.n == (5 if name == "quality" else 4)
        assert math.isnan(r.win_rate.value)
    assert math.isnan(result.delta_pq.value)


def test_a_judge_preferring_longer_answers_gives_the_hand_computed_win_rates(runs):
    judge = RuleJudge(longer)
    result = judge_runs(*runs, judge, n_boot=200)
    q, p = result.rubrics["quality"], result.rubrics["personalization"]
    assert (q.wins, q.ties, q.losses, q.missing) == (3, 1, 1, 0) and q.win_rate.value == 0.75
    assert (p.wins, p.ties, p.losses, p.missing) == (2, 1, 1, 1) and p.win_rate.value == pytest.approx(2 / 3)
    # ΔPQ over the 4 pairs judged under both rubrics: 2/3 + 2/3 - 1
    assert result.delta_pq.value == pytest.approx(1 / 3) and result.delta_pq.n == 4
    for e in (q.win_rate, p.win_rate, result.delta_pq):
        assert e.low <= e.value <= e.high
    assert len(judge.requests) == 2 * (5 + 4) - 2  # the equal pair's two orders are one request per rubric
    rows = {r["index"]: r for r in result.judgments}
    assert rows[2]["quality"] == {"outcome": "loss", "verdicts": [1, 2], "outputs": ["1", "2"]}
    assert "personalization" not in rows[4] and rows[0]["persona"] == "P0"


def test_unparseable_outputs_are_ties_and_are_counted(runs):
    result = judge_runs(*runs, RuleJudge(lambda a, b: "Both are lovely."), rubrics=["quality"])
    q = result.rubrics["quality"]
    assert (q.ties, q.unparseable, list(result.rubrics)) == (5, 10, ["quality"])
    assert result.delta_pq is None


def test_judging_is_cached_and_an_interrupted_run_resumes(runs, tmp_path):
    cache = tmp_path / "judge" / CACHE_FILE
    first = RuleJudge(longer, fail_after=5)
    with pytest.raises(KeyboardInterrupt, match=""):
        judge_runs(*runs, first, cache_path=cache, chunk_size=2)
    second = RuleJudge(longer)
    result = judge_runs(*runs, second, cache_path=cache, chunk_size=2)
    assert len(first.requests) == 5 and len(second.requests) == 16 - 4  # the chunk in flight is lost
    assert result.rubrics["quality"].win_rate.value == 0.75
    third = RuleJudge(lambda a, b: "1")
    assert judge_runs(*runs, third, cache_path=cache).rubrics["quality"].wins == 3 and third.requests == []
    other = RuleJudge(lambda a, b: "1", identity="another-judge")
    assert judge_runs(*runs, other, cache_path=cache).rubrics["quality"].wins == 0


def test_runs_are_paired_by_record_and_prompt(tmp_path):
    base = write_run(tmp_path / "base", "none", ["x", "yy", "zzz"], ["P"] * 3)
    test = write_run(tmp_path / "test", "persona", ["xx", "y"], ["P"] * 2)
    result = judge_runs(base, test, RuleJudge(longer), rubrics=["quality"])
    assert result.pairs == 2 and result.unmatched == {"base": 1, "test": 0}
    assert result.rubrics["quality"].wins == 1 and result.rubrics["quality"].losses == 1


def test_bootstrap_shares_resamples_and_is_deterministic():
    outcomes = {"quality": np.array([1, 1, -1, 0] * 5, dtype=float),
                "personalization": np.array([1, -1, -1, 1] * 5, dtype=float)}
    a = bootstrap_win_rates(outcomes, n_boot=300, seed=1)
    assert a == bootstrap_win_rates(outcomes, n_boot=300, seed=1)
    rates, delta = a
    assert rates["quality"].value == pytest.approx(2 / 3) and rates["personalization"].value == 0.5
    assert delta.value == pytest.approx(2 / 3 + 0.5 - 1)
    assert rates["quality"].low < 2 / 3 < rates["quality"].high and delta.low < delta.value < delta.high


def test_write_judge_and_the_command_line(runs, tmp_path, tiny_model_dir):
    result = judge_runs(*runs, RuleJudge(longer))
    js, md, pairs = write_judge(result, tmp_path / "out")
    saved = json.loads(js.read_text())
    assert saved["kind"] == "pairwise-judge" and saved["rubrics"]["quality"]["wins"] == 3
    assert "| quality | 5 | 3 | 1 | 1 | 0.750 |" in md.read_text() and "ΔPQ" in md.read_text()
    assert len(pairs.read_text().splitlines()) == 5
    out = tmp_path / "cli"
    res = CliRunner().invoke(app, ["eval", "judge", "--base", str(runs[0]), "--test", str(runs[1]), "--out", str(out),
                                   "--model", str(tiny_model_dir), "--rubric", "quality", "--max-new-tokens", "2"])
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "judge.json").read_text())
    assert list(saved["rubrics"]) == ["quality"] and saved["rubrics"]["quality"]["n"] == 5
    assert (out / CACHE_FILE).is_file() and (out / "judge.md").is_file()


class PrometheusJudge:
    """Answers in Prometheus-2's relative-grading format: feedback mentioning both responses, then [RESULT]."""

    identity = "prometheus-rule"

    def __init__(self):
        self.requests: list = []

    def generate(self, requests: Sequence, config: GenerationConfig, *, progress: bool = True) -> list[str]:
        out = []
        for r in requests:
            self.requests.append(r)
            m = re.search(r"###Response A:\n(.*?)\n\n###Response B:\n(.*?)\n\n###Score Rubric", r[-1]["content"], re.S)
            a, b = m.group(1), m.group(2)
            winner = "B" if len(b) > len(a) else "A"
            out.append(f"Feedback: Response A is {len(a)} characters and Response B is {len(b)}; Response A is "
                       f"clear but Response B is also clear. [RESULT] {winner}")
        return out


def test_prometheus_preset_matches_the_default_judge_on_the_same_preference(runs):
    judge = PrometheusJudge()
    result = judge_runs(*runs, judge, preset="prometheus", n_boot=100)
    q = result.rubrics["quality"]
    assert (q.wins, q.ties, q.losses) == (3, 1, 1)  # same hand-computed counts as the "longer" rule judge
    system, user = judge.requests[0]
    # prometheus-eval's REL_SYSTEM_PROMPT and RELATIVE_PROMPT_WO_REF, verbatim
    assert system["content"] == ("You are a fair judge assistant assigned to deliver insightful feedback that compares "
                                 "individual performances, highlighting how each stands relative to others within the "
                                 "same cohort.")
    assert user["content"].startswith(
        "###Task Description:\nAn instruction (might include an Input inside it), a response to evaluate, and a score "
        "rubric representing a evaluation criteria are given.\n1. Write a detailed feedback that assess the quality of "
        "two responses strictly based on the given score rubric, not evaluating in general.\n2. After writing a "
        "feedback, choose a better response between Response A and Response B. You should refer to the score "
        "rubric.\n3. The output format should look as follows: \"(write a feedback for criteria) [RESULT] (A or B)\"\n"
        "4. Please do not generate any other opening, closing, and explanations.\n\n###Instruction:\n"
        "Please provide a response to the following prompt. Prompt: ")
    assert user["content"].endswith("\n\n###Score Rubric:\nIs the response high-quality?\n\n###Feedback: ")
    persona_requests = [r for r in judge.requests if "###Instruction:\nPlease provide a response that aligns with the "
                        "attributes of the following persona. Persona: P0\n" in r[1]["content"]]
    assert len(persona_requests) == 2 and result.config["preset"] == "prometheus"
    assert "Does the response align with the user's specified persona?" in persona_requests[0][1]["content"]
    mnemonic = PrometheusJudge()
    judge_runs(*runs, mnemonic, preset="prometheus-mnemonic", rubrics=["quality"], n_boot=10)
    assert "Please provide a keyword mnemonic to the following vocabulary term. Prompt: " in mnemonic.requests[0][1]["content"]
    assert " sounds like\n\n###Response A:" in mnemonic.requests[0][1]["content"]


class _PrometheusHandler(BaseHTTPRequestHandler):
    """An OpenAI-compatible Prometheus: prefers the longer response, answers in the seed's format
    ("Feedback: ... [RESULT] A"), honours a `[RESULT]` stop, and continues a final assistant message
    with top log-probs of "A" and "B" (its choice likely, not certain)."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.server.bodies.append(body)
        m = re.search(r"###Response A:\n(.*?)\n\n###Response B:\n(.*?)\n\n###Score Rubric", body["messages"][1]["content"],
                      re.S)
        winner = "B" if len(m.group(2)) > len(m.group(1)) else "A"
        feedback = "Feedback: Both responses address the prompt; one of them says more. "
        if body["messages"][-1]["role"] == "assistant":  # continue after [RESULT]: one token, with top log-probs
            assert body["continue_final_message"] is True and body["messages"][-1]["content"].endswith("[RESULT]")
            top = [{"token": " " + winner, "logprob": math.log(0.8)},
                   {"token": " " + ("A" if winner == "B" else "B"), "logprob": math.log(0.15)},
                   {"token": " The", "logprob": math.log(0.05)}]
            message, logprobs = {"role": "assistant", "content": " " + winner}, {
                "content": [{"token": " " + winner, "logprob": top[0]["logprob"], "top_logprobs": top}]}
        else:
            text = feedback + f"[RESULT] {winner}"
            if "[RESULT]" in body.get("stop", []):
                text = text[: text.index("[RESULT]")]
            message, logprobs = {"role": "assistant", "content": text}, None
        reply = {"choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": "stop"}]}
        send_json(self, reply)


@pytest.mark.parametrize("verdict_mode", ["generate", "logprob"])
def test_eval_judge_prometheus_on_a_loopback_server_gives_the_seeds_verdicts(verdict_mode, runs, tmp_path):
    """`eval judge --preset prometheus` against a server answering in the seed's output format: the verdicts
    the seed reads from "[RESULT] A|B" (generate), or from P(A), P(B) after "[RESULT]" (logprob): the same
    hand-computed counts as the rule judge."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PrometheusHandler)
    server.bodies = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        res = CliRunner().invoke(app, [
            "eval", "judge", "--base", str(runs[0]), "--test", str(runs[1]), "--out", str(tmp_path / "j"),
            "--preset", "prometheus", "--backend", "openai", "--model", "prometheus-7b-v2.0", "--base-url",
            f"http://127.0.0.1:{server.server_address[1]}/v1", "--verdict-mode", verdict_mode, "--rubric", "quality"])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert res.exit_code == 0, res.output
    q = json.loads((tmp_path / "j" / "judge.json").read_text())["rubrics"]["quality"]
    assert (q["wins"], q["ties"], q["losses"]) == (3, 1, 1)
    # the tied pair (equal lengths: "A" in both orders) reads as a disagreement in text, as exactly 0.5 in log-probs
    assert q["unparseable"] == (2 if verdict_mode == "logprob" else 0)
    continued = [b for b in server.bodies if b["messages"][-1]["role"] == "assistant"]
    reasoned = [b for b in server.bodies if "[RESULT]" in b.get("stop", [])]
    # logprob: each distinct request (10, one repeated) reasons up to [RESULT], then is continued once
    assert len(continued) == len(reasoned) == (9 if verdict_mode == "logprob" else 0)


def test_a_prompt_file_replaces_the_judge_prompt_and_changes_the_cache_key(runs, tmp_path):
    from personalign.config import ConfigError
    from personalign.eval.judge import JUDGE_SLOTS
    from personalign.llm.prompt_file import load_prompt_file

    path = tmp_path / "judge.yaml"
    path.write_text("system: Judge by {question}\nshots:\n  - user: 'Response 1: x\n\n    Response 2: yy\n\n    '\n"
                    "    assistant: '2'\nuser: \"Response 1: {first}\\n\\nResponse 2: {second}\\n\\nPersona {persona}\"\n")
    template = load_prompt_file(path, JUDGE_SLOTS, {"first", "second"})
    judge = RuleJudge(longer)
    cache = tmp_path / "cache.jsonl"
    result = judge_runs(*runs, judge, prompt_file=template, cache_path=cache, n_boot=100)
    assert (result.rubrics["quality"].wins, result.rubrics["quality"].losses) == (3, 1)
    sent = judge.requests[0]
    assert sent[0] == {"role": "system", "content": f"Judge by {RUBRICS['quality']}"}
    assert sent[1]["content"].startswith("Response 1: x") and sent[2] == {"role": "assistant", "content": "2"}
    assert result.config["prompt_file"] == str(path)
    n = len(judge.requests)
    judge_runs(*runs, judge, cache_path=cache, n_boot=100)  # our own prompt: other keys, judged afresh
    assert len(judge.requests) > n
    path.write_text("user: '{first} {second} {unknown}'\n")
    with pytest.raises(ConfigError, match=r"judge\.yaml: unknown slot\(s\) \['unknown'\]"):
        load_prompt_file(path, JUDGE_SLOTS)
    path.write_text("user: 'no slots'\n")
    with pytest.raises(ConfigError, match="must use slot"):
        load_prompt_file(path, JUDGE_SLOTS, {"first", "second"})
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="is a mapping"):
        load_prompt_file(path, JUDGE_SLOTS)

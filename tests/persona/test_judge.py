from __future__ import annotations

import json

import pytest
from fake_llm import RuleBackend, field

from personalign.persona.judge import persona_accuracy, persona_preference
from personalign.records.schema import Example, UserContext


def examples(n: int = 6, rejected: bool = True) -> list[Example]:
    """Chosen responses mention 'alpha', rejected ones 'beta'; personas name the word they want."""
    out = []
    for i in range(n):
        personas = {"chosen_persona": "The user wants alpha.", "ground_truth_persona": "Be alpha."}
        if rejected:
            personas["rejected_persona"] = "The user wants beta."
        out.append(Example(f"Q{i}?", [f"alpha {i}", f"beta {i}"], user=UserContext(personas=personas)))
    return out


def truth_judge(query: str) -> str:
    """Knows the truth: the response holding the persona's wanted word."""
    word = field(query, "Persona").split()[-1].strip(".")
    return "1" if word in field(query, "Response 1") else "2"


def test_always_one_is_exactly_chance():
    result = persona_accuracy(examples(), RuleBackend(lambda q: "1"))
    assert result.accuracy.value == 0.5
    assert (result.target_first, result.target_second, result.n_personas, result.unparseable) == (1.0, 0.0, 6, 0)


@pytest.mark.parametrize("persona_field", ["chosen_persona", "rejected_persona", "ground_truth_persona"])
def test_a_judge_that_knows_the_truth_is_perfect(persona_field):
    backend = RuleBackend(truth_judge)
    result = persona_accuracy(examples(), backend, persona_field=persona_field)
    assert result.accuracy.value == 1.0 and result.accuracy.low == 1.0
    assert backend.n_requests == 12


def test_unparseable_verdicts_are_wrong_and_counted_and_missing_personas_skipped():
    data = examples(3) + examples(2, rejected=False)
    result = persona_accuracy(data, RuleBackend(lambda q: "hmm"), persona_field="rejected_persona")
    assert (result.accuracy.value, result.unparseable, result.n_personas, result.missing) == (0.0, 6, 3, 2)


def test_accuracy_judge_calls_are_cached(tmp_path):
    cache = tmp_path / "judge.jsonl"
    persona_accuracy(examples(), RuleBackend(truth_judge), cache_path=cache)
    other_judge = RuleBackend(lambda q: "1", identity="other-judge")
    assert persona_accuracy(examples(), other_judge, cache_path=cache).accuracy.value == 0.5
    replay = RuleBackend(lambda q: "2")
    assert persona_accuracy(examples(), replay, cache_path=cache).accuracy.value == 1.0 and replay.n_requests == 0


def test_prefer_always_one_is_all_ties():
    result = persona_preference(examples(), RuleBackend(lambda q: "1"))
    assert result.rates() == {"chosen": 0.0, "tie": 1.0, "rejected": 0.0} and result.n == 6


def test_prefer_consistent_judge_wins_and_missing():
    alpha = RuleBackend(lambda q: "1" if "alpha" in field(q, "Persona 1") else "2")
    result = persona_preference(examples(4) + examples(1, rejected=False), alpha)
    assert (result.chosen_wins, result.ties, result.rejected_wins, result.missing) == (4, 0, 0, 1)
    beta = persona_preference(examples(4), RuleBackend(lambda q: "2" if "alpha" in field(q, "Persona 1") else "1"))
    assert beta.rejected_wins == 4
    half = persona_preference(examples(2), RuleBackend(lambda q: "2" if "alpha" in field(q, "Persona 1") else "x"))
    assert (half.ties, half.unparseable) == (2, 2)


def test_persona_judges_and_inference_take_a_prompt_file(tmp_path):
    from personalign.llm.prompt_file import load_prompt_file
    from personalign.persona.infer import infer_personas
    from personalign.persona.judge import persona_accuracy
    from personalign.persona.prompts import ACCURACY_SLOTS, INFER_SLOTS

    acc = tmp_path / "acc.yaml"
    acc.write_text("user: 'WHO {persona} | A) {first} | B) {second}'\n")
    asked: list[str] = []

    def rule(query: str) -> str:
        asked.append(query)
        first = query.split("A) ")[1].split(" |")[0]
        return "1" if first.startswith("good") else "2"

    records = [Example(f"Q{i}?", [f"good {i}", f"bad {i}"], user=UserContext(personas={"chosen_persona": "P"}))
               for i in range(3)]
    result = persona_accuracy(records, RuleBackend(rule), prompt_file=load_prompt_file(acc, ACCURACY_SLOTS))
    assert result.accuracy.value == 1.0 and asked[0] == "WHO P | A) good 0 | B) bad 0"

    infer = tmp_path / "infer.yaml"
    infer.write_text("system: Describe the user.\nuser: 'Liked: {preferred}\n\nDisliked: {other}'\n")
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "Q?", "chosen": "short", "rejected": "long answer"}\n')
    backend = RuleBackend(lambda q: f"The user likes {q.split(chr(10))[0].removeprefix('Liked: ')}.")
    infer_personas(data, backend, tmp_path / "out.jsonl", prompt_file=load_prompt_file(infer, INFER_SLOTS))
    row = json.loads((tmp_path / "out.jsonl").read_text())
    assert row["chosen_persona"] == "The user likes short." and row["rejected_persona"] == "The user likes long answer."
    assert backend.calls[0][0][0] == {"role": "system", "content": "Describe the user."}

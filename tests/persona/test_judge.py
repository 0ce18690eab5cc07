from __future__ import annotations

import pytest
from fake_llm import RuleBackend, field

from personalign.data.schema import Example, UserContext
from personalign.persona.judge import persona_accuracy, persona_preference


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

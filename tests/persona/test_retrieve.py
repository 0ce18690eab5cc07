from __future__ import annotations

import numpy as np

from personalign.persona.retrieve import nearest, retrieve_personas
from personalign.records.io import read_examples


def rec(prompt: str, persona: str | None, tag: str = "", rejected_persona: str | None = None) -> dict:
    r = {"prompt": prompt, "chosen": f"good {tag}", "rejected": f"bad {tag}"}
    if persona:
        r["chosen_persona"] = persona
    if rejected_persona:
        r["rejected_persona"] = rejected_persona
    return r


def test_nearest_skips_excluded_rows():
    keys = np.eye(3, dtype=np.float32)
    queries = np.array([[0.9, 0.1, 0], [0.9, 0.1, 0], [1, 0, 0]], dtype=np.float32)
    assert nearest(queries, keys, [set(), {0}, {0, 1, 2}], chunk=2).tolist() == [0, 1, -1]


def test_retrieves_the_nearest_training_prompt_never_the_record_itself(write_records, tmp_path):
    list_a = rec("How do I sort a list in Python?", "The user is a programmer.", "a", "The user hates code.")
    list_b = rec("How do I sort a list in Python?", "The user is a beginner coder.", "b")
    dict_c = rec("How can I sort a Python dictionary by value?", "The user wrangles data.", "c")
    train = write_records([
        rec("How do I bake sourdough bread at home?", "The user is a home baker.", "x", "The user buys bread."),
        rec("What is the best way to change a car tire?", "The user is a driver.", "y"),
        list_a, list_b, dict_c,
        rec("How do I bake sourdough bread at home?", None, "no persona: never a candidate"),
    ], "train.jsonl")
    test = write_records([
        rec("Any tips for making bread with a sourdough starter?", None, "1"),
        rec("My tire went flat; how do I put the spare on?", None, "2"),
        list_a,
        dict_c,
    ], "test.jsonl")
    stats = retrieve_personas(train, test, tmp_path / "out.jsonl")
    got = [ex.user.personas for ex in read_examples(tmp_path / "out.jsonl")]
    assert [p["retrieved_chosen_persona"] for p in got] == [
        "The user is a home baker.", "The user is a driver.",
        "The user is a beginner coder.",  # same prompt, a different record: allowed
        "The user is a programmer.",  # its only same-prompt record is itself: the next prompt
    ]
    assert got[0]["retrieved_rejected_persona"] == "The user buys bread."
    assert got[3]["retrieved_rejected_persona"] == "The user hates code."
    assert "retrieved_rejected_persona" not in got[1] and got[2]["chosen_persona"] == "The user is a programmer."
    assert (stats.records, stats.retrieved, stats.excluded_self) == (4, 4, 2)
    assert (stats.train_records, stats.train_prompts) == (5, 4)

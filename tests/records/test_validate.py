"""Raw dict -> Example validation and its inverse, `to_record`."""
from __future__ import annotations

import pytest

from personalign.records.errors import RecordError
from personalign.records.schema import Comment, Pair
from personalign.records.validate import to_example, to_record


def vec(fill: float = 0.5, **at: float) -> list:
    v = [fill] * 90
    for i, x in at.items():
        v[int(i.lstrip("i"))] = x
    return v


def alignx(**over) -> dict:
    rec = {
        "prompt": "How do I bake bread?",
        "chosen": "Start with a poolish.",
        "rejected": "Buy some.",
        "Preference Direction": vec(1, i3=0),
        "Demographic Information": "A 34-year-old baker.",
        "User-Generated Content": [{"prompt": "Sourdough?", "comment": "Love it", "Preference Direction": vec(0)}],
        "Pair-wise Comparative Feedback": [{"prompt": "Yeast?", "chosen": "Fresh", "rejected": "Dry"}],
    }
    rec.update(over)
    return rec


def check(raw: dict) -> dict:
    return to_example(raw, file="f.jsonl", line=7)


def error(raw) -> RecordError:
    with pytest.raises(RecordError, match=r"^f\.jsonl:7") as info:
        to_example(raw, file="f.jsonl", line=7)
    assert info.value.file == "f.jsonl" and info.value.line == 7
    return info.value


def test_alignx_record_fills_user_context():
    ex = check(alignx())
    assert ex.prompt == "How do I bake bread?"
    assert ex.responses == ["Start with a poolish.", "Buy some."] and ex.chosen == "Start with a poolish."
    assert ex.rewards is None and ex.source == "f.jsonl:7"
    u = ex.user
    assert u.direction[3] == 0 and u.direction[4] == 1
    assert u.demographic == "A 34-year-old baker."
    assert u.ugc == [Comment("Sourdough?", "Love it", vec(0))]
    assert u.pairs == [Pair("Yeast?", "Fresh", "Dry", None)]
    assert u.slice == "all" and ex.extra == {}


def test_minimal_pair_has_empty_context_and_null_means_absent():
    ex = check({"prompt": "p", "chosen": "a", "rejected": "b", "Demographic Information": None,
                "User-Generated Content": None, "Preference Direction": None, "note": None})
    assert ex.user.slice == "none" and ex.user.direction is None and ex.user.demographic is None
    assert ex.extra == {}


def test_unknown_keys_are_kept_untouched():
    meta = {"source": "reddit", "ids": [1, 2]}
    ex = check(alignx(meta=meta, score=3.5))
    assert ex.extra == {"meta": meta, "score": 3.5}
    assert ex.extra["meta"] is meta


def test_persona_aliases_map_to_canonical_names_and_gold_is_kept():
    ex = check({"prompt": "p", "chosen": "a", "rejected": "b", "chosen_persona_gold": "The user likes brevity.",
                "rejected_persona_gold": "The user likes detail.", "chosen_persona_retr": "R1",
                "rejected_persona_retr": "R2", "ground_truth_persona": "Be witty.", "profile": "Older, Likes humor"})
    assert ex.user.personas == {
        "chosen_persona": "The user likes brevity.", "rejected_persona": "The user likes detail.",
        "retrieved_chosen_persona": "R1", "retrieved_rejected_persona": "R2", "ground_truth_persona": "Be witty.",
    }
    assert ex.user.profile == "Older, Likes humor"
    assert ex.user.persona("retrieved") == "R1" and ex.extra == {}


def test_persona_alias_conflicting_with_canonical_key_is_an_error():
    e = error({"prompt": "p", "chosen": "a", "rejected": "b", "chosen_persona": "X", "chosen_persona_gold": "Y"})
    assert e.field == "chosen_persona_gold" and "conflicts with 'chosen_persona'" in e.message
    ok = check({"prompt": "p", "chosen": "a", "rejected": "b", "chosen_persona": "X", "chosen_persona_gold": "X"})
    assert ok.user.personas == {"chosen_persona": "X"}


def test_ranking_record_is_sorted_by_reward_descending_and_stable():
    ex = check({"prompt": "p", "responses": ["a", "b", "c", "d"], "rewards": [0.1, 2, 0.5, 2]})
    assert ex.responses == ["b", "d", "c", "a"] and ex.rewards == [2, 2, 0.5, 0.1]
    assert ex.chosen == "b" and ex.rejected == "a"


def test_ranking_without_rewards_keeps_the_given_order():
    ex = check({"prompt": "Human: hi\nAssistant: hello\nHuman: and?", "responses": ["z", "y", "x"], "id": 4})
    assert ex.responses == ["z", "y", "x"] and ex.rewards is None and ex.extra == {"id": 4}


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ({"prompt": "p", "responses": ["a"]}, "responses", "expected a list of at least 2 non-empty strings, got 1"),
        ({"prompt": "p", "responses": "ab"}, "responses", "got a string"),
        ({"prompt": "p", "responses": ["a", " "]}, "responses[1]", "expected a non-empty string, got a blank string"),
        ({"prompt": "p", "responses": ["a", "b"], "rewards": [1]}, "rewards", "expected a list of 2 numbers (one per response), got 1"),
        ({"prompt": "p", "responses": ["a", "b"], "rewards": [1, "2"]}, "rewards[1]", 'expected a finite number, got "2"'),
        ({"prompt": "p", "responses": ["a", "b"], "rewards": [True, 0]}, "rewards[0]", "got true"),
        ({"prompt": "p", "responses": ["a", "b"], "rewards": [0, float("nan")]}, "rewards[1]", "got NaN"),
        ({"prompt": "p", "responses": ["a", "b"], "chosen": "a"}, "chosen", "cannot also have 'chosen'"),
        (alignx(rewards=[1, 0]), "rewards", "a pair record cannot also have 'rewards'"),
        (alignx(prompt=3), "prompt", "expected a non-empty string, got a number"),
        (alignx(**{"Preference Direction": vec(1, i5=True)}), "Preference Direction[5]", "expected one of 0, 0.5, 1, got true"),
        (alignx(**{"Preference Direction": "1,0"}), "Preference Direction", "expected a list of 90 numbers, got a string"),
        (alignx(**{"Demographic Information": 30}), "Demographic Information", "expected a string, got a number"),
        (alignx(**{"User-Generated Content": {"prompt": "x"}}), "User-Generated Content",
         "expected a list of objects {prompt, comment}, got an object"),
        (alignx(**{"User-Generated Content": [{"prompt": "x"}]}), "User-Generated Content[0].comment", "missing"),
        (alignx(**{"Pair-wise Comparative Feedback": [{"prompt": "q", "chosen": "a", "rejected": "b"},
                                                       {"prompt": "q", "chosen": "a", "rejected": 5}]}),
         "Pair-wise Comparative Feedback[1].rejected", "expected a string, got a number"),
        (alignx(**{"Pair-wise Comparative Feedback": [{"prompt": "q", "chosen": "a", "rejected": "b",
                                                       "Preference Direction": vec(0, i89=2)}]}),
         "Pair-wise Comparative Feedback[0].Preference Direction[89]", "expected one of 0, 0.5, 1, got 2"),
        (alignx(ground_truth_persona=["x"]), "ground_truth_persona", "expected a string, got a list"),
    ],
)
def test_field_paths_and_messages(raw, field, message):
    e = error(raw)
    assert e.field == field
    assert message in e.message
    assert str(e).startswith(f"f.jsonl:7: field '{field}': ")


def test_a_record_that_is_not_an_object_is_an_error():
    e = error(["prompt", "chosen"])
    assert e.field is None and e.message == "expected a JSON object, got a list"


def test_tuples_are_accepted_as_lists():
    ex = check(alignx(**{"Preference Direction": tuple(vec(0))}))
    assert ex.user.direction == vec(0) and type(ex.user.direction) is list


@pytest.mark.parametrize(
    "raw",
    [
        alignx(),
        alignx(note={"a": [1, 2]}, ground_truth_persona="Be kind.", profile="Likes cats"),
        {"prompt": "p", "chosen": "a", "rejected": "b", "chosen_persona_gold": "G", "rejected_persona_retr": "R"},
        {"prompt": "p", "responses": ["a", "b", "c"], "rewards": [0, 3, 1], "Demographic Information": "d"},
        {"prompt": "p", "responses": ["same", "same"]},
        {"prompt": "p", "responses": ["a", "b"]},
    ],
)
def test_to_record_round_trips(raw):
    ex = check(raw)
    rec = to_record(ex)
    again = to_example(rec, file="g", line=1)
    assert (again.prompt, again.responses, again.rewards, again.user, again.extra) == (
        ex.prompt, ex.responses, ex.rewards, ex.user, ex.extra)


def test_to_record_uses_original_key_names():
    rec = to_record(check(alignx(chosen_persona_gold="G", extra_key=1)))
    assert set(rec) == {"prompt", "chosen", "rejected", "Preference Direction", "Demographic Information",
                        "User-Generated Content", "Pair-wise Comparative Feedback", "chosen_persona", "extra_key"}
    assert rec["User-Generated Content"][0] == {"prompt": "Sourdough?", "comment": "Love it", "Preference Direction": vec(0)}
    assert "Preference Direction" not in rec["Pair-wise Comparative Feedback"][0]
    ranked = to_record(check({"prompt": "p", "responses": ["a", "b"], "rewards": [0, 1]}))
    assert ranked == {"prompt": "p", "responses": ["b", "a"], "rewards": [1, 0]}

from __future__ import annotations

import pytest

from personalign.persona.saliency import persona_words, word_saliency


@pytest.mark.parametrize(
    ("persona", "words"),
    [
        ("The user is Curious. Second sentence.", ["the", "user", "is", "curious"]),
        ("The user wants facts rather than jokes.", ["the", "user", "wants", "facts"]),
        ("The user likes overviews over details.", ["the", "user", "likes", "overviews"]),
        ("Brevity versus depth", ["brevity"]),
        ("Warmth compared to rigor; instead of x", ["warmth"]),
        ("Clarity instead of style", ["clarity"]),
        ("A user's step-by-step guide", ["a", "user's", "step-by-step", "guide"]),
    ],
)
def test_persona_words(persona, words):
    assert persona_words(persona) == words


def test_saliency_matches_hand_counts():
    personas = {
        "chosen": ["The user wants concise facts.", "The user wants concise answers rather than fluff.",
                   "The user wants facts. Then stories."],
        "rejected": ["The user wants stories over facts.", "The user wants fluff and stories."],
    }
    # after cutting: chosen = {wants:3, concise:2, facts:2, answers:1}; rejected = {wants:2, stories:2, fluff:1}
    got = word_saliency(personas, cutoff=2)
    assert got == {
        "chosen": [("concise", 1.0, 2), ("facts", 1.0, 2), ("wants", 0.6, 5)],
        "rejected": [("stories", 1.0, 2), ("wants", 0.4, 5)],
    }
    assert word_saliency(personas, cutoff=3) == {"chosen": [("wants", 0.6, 5)], "rejected": [("wants", 0.4, 5)]}
    # own stop words replace the default ones ("and" counts now); the cut drops chosen's "fluff"
    assert word_saliency(personas, cutoff=1, stopwords=["the", "user", "wants"]) == {
        "chosen": [("concise", 1.0, 2), ("facts", 1.0, 2), ("answers", 1.0, 1)],
        "rejected": [("stories", 1.0, 2), ("and", 1.0, 1), ("fluff", 1.0, 1)],
    }

from __future__ import annotations

import pytest

from personalign.errors import UserError
from personalign.persona.saliency import persona_words, seed_persona_words, word_saliency


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
    got = word_saliency(personas, cutoff=2, method="ours")
    assert got == {
        "chosen": [("concise", 1.0, 2), ("facts", 1.0, 2), ("wants", 0.6, 5)],
        "rejected": [("stories", 1.0, 2), ("wants", 0.4, 5)],
    }
    assert word_saliency(personas, cutoff=3, method="ours") == {"chosen": [("wants", 0.6, 5)], "rejected": [("wants", 0.4, 5)]}
    # own stop words replace the default ones ("and" counts now); the cut drops chosen's "fluff"
    assert word_saliency(personas, cutoff=1, stopwords=["the", "user", "wants"], method="ours") == {
        "chosen": [("concise", 1.0, 2), ("facts", 1.0, 2), ("answers", 1.0, 1)],
        "rejected": [("stories", 1.0, 2), ("and", 1.0, 1), ("fluff", 1.0, 1)],
    }


@pytest.mark.parametrize(
    ("persona", "words"),
    [
        # first sentence, lemmas of every part of speech (simplemma), "," and "." stripped
        ("The user wants concise facts, quickly. Second sentence.", ["the", "user", "want", "concise", "fact", "quickly"]),
        # the seed splits on substrings: "moreover" is cut at its "over"
        ("Moreover the user likes dogs.", ["more"]),
        # "'s" is a token of its own, "'" stripped
        ("The user's children rather than adults.", ["the", "user", "s", "child"]),
        ("Brevity versus depth; compared to x", ["brevity"]),
        ("", []),
    ],
)
def test_seed_persona_words(persona, words):
    assert seed_persona_words(persona) == words


def test_seed_saliency_matches_hand_counts():
    personas = {
        "chosen": ["The user wants concise facts.", "Moreover the user wants dogs.", "The user's dogs rather than cats."],
        "rejected": ["The user wants cats over dogs.", "Cats. Dogs."],
    }
    # chosen words: the user want concise fact | more | the user s dog; rejected: the user want cat | cat.
    # totals: the 3, user 3, want 2, cat 2, the rest 1. Kept at cutoff 2 in first-seen order (the, user, want,
    # cat), listed under both labels, sorted by saliency alone (a stable sort keeps ties in that order).
    got = word_saliency(personas, cutoff=2)
    assert got == {
        "chosen": [("the", 2 / 3, 3), ("user", 2 / 3, 3), ("want", 0.5, 2), ("cat", 0.0, 2)],
        "rejected": [("cat", 1.0, 2), ("want", 0.5, 2), ("the", 1 / 3, 3), ("user", 1 / 3, 3)],
    }
    # the seed's cutoff 3 is the default
    assert word_saliency(personas) == {"chosen": [("the", 2 / 3, 3), ("user", 2 / 3, 3)],
                                       "rejected": [("the", 1 / 3, 3), ("user", 1 / 3, 3)]}


def test_wordnet_needs_its_data_and_unknown_names_are_refused():
    nltk = pytest.importorskip("nltk")
    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        with pytest.raises(UserError, match="nltk.download\\('wordnet'\\)"):
            word_saliency({"chosen": ["x"]}, lemmatizer_name="wordnet")
    else:
        assert word_saliency({"chosen": ["dogs dogs dogs"]}, lemmatizer_name="wordnet") == {"chosen": [("dog", 1.0, 3)]}
    with pytest.raises(UserError, match="unknown saliency method 'x'"):
        word_saliency({"chosen": ["x"]}, method="x")
    with pytest.raises(UserError, match="unknown lemmatizer 'x'"):
        word_saliency({"chosen": ["x"]}, lemmatizer_name="x")

"""Word saliency of personas (docs/fidelity.md, "Persona Inference"): which words mark chosen vs. rejected personas.

The saliency of word w for label y is count(w, y) / count(w), over words seen at least `cutoff`
times in all labels together. Two ways to find a persona's words:

* `seed` (default), as persona-anon's `persona_inference/evaluation/word_saliency.py` does: the
  persona is lower-cased, cut to its first sentence (nltk Punkt), split at each of "rather than",
  "over", "versus", "compared to", "instead of" *as substrings* in that order (so "moreover" is cut
  too), word-tokenized with nltk's Treebank tokenizer, stripped of `,` `.` `'` and lemmatized;
  no stop words, cutoff 3, ranked by saliency alone (ties in first-seen order), every word over
  the cutoff listed under both labels (0 where absent).
* `ours`: first sentence and first contrast marker as whole words, whole words without lemmas,
  a stop-word list, cutoff 10, ties broken by count then word.

Deliberate differences from the seed (docs/fidelity.md): the seed lemmatizes with nltk's
WordNet noun lemmatizer, whose data must be downloaded; `lemmatizer="simplemma"` (default)
ships its data and lemmatizes every part of speech ("prefers" -> "prefer", where WordNet keeps
"prefers"), `lemmatizer="wordnet"` is the seed's when nltk's `wordnet` data is installed. Punkt
runs without its trained English abbreviation list (`punkt_tab`, also a download). Tokens left
with no letter or digit (the seed counts "" for every "." and ",") are not counted; no other
word's saliency changes by that.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

from personalign.errors import UserError
from personalign.files import write_json

STOPWORDS = frozenset(
    "a an the and or but of to in on for with by at from as is are was be been being it its this that "
    "these those who whom which what when where how than then so such their them they user users "
    "his her he she has have had do does not no more most very".split()
)

SEED_SPLITS = ("rather than", "over", "versus", "compared to", "instead of")
SaliencyMethod = Literal["seed", "ours"]
Lemmatizer = Literal["simplemma", "wordnet"]
METHOD_CUTOFF = {"seed": 3, "ours": 10}
LEMMATIZERS: tuple[str, ...] = get_args(Lemmatizer)

_FIRST_SENTENCE = re.compile(r"[.!?](?:\s|$)")
_CONTRAST = re.compile(r"\b(?:rather than|over|versus|compared to|instead of)\b")
_WORD = re.compile(r"[a-z0-9]+(?:['’-][a-z0-9]+)*")


def persona_words(persona: str) -> list[str]:
    """The words of a persona that saliency counts (stop words not yet removed)."""
    text = persona.lower()
    end = _FIRST_SENTENCE.search(text)
    if end:
        text = text[:end.start()]
    cut = _CONTRAST.search(text)
    if cut:
        text = text[:cut.start()]
    return _WORD.findall(text)


def lemmatizer(name: str = "simplemma"):
    """A function word -> lemma: `simplemma` (English, data shipped) or nltk's `wordnet` noun
    lemmatizer (the seed's; needs `nltk.download("wordnet")`)."""
    if name == "simplemma":
        import simplemma

        return lambda word: simplemma.lemmatize(word, lang="en")
    if name == "wordnet":
        import nltk
        from nltk.stem import WordNetLemmatizer

        try:
            nltk.data.find("corpora/wordnet")
        except LookupError:
            raise UserError("--lemmatizer wordnet needs nltk's WordNet data: run "
                            "python -c \"import nltk; nltk.download('wordnet')\" or use --lemmatizer simplemma") from None
        return WordNetLemmatizer().lemmatize
    raise UserError(f"unknown lemmatizer {name!r}: choose one of {', '.join(LEMMATIZERS)}")


@lru_cache(maxsize=1)
def _nltk_tokenizers():
    """(sentence splitter, word tokenizer): nltk's Punkt (untrained: no download) and Treebank tokenizers."""
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    return PunktSentenceTokenizer(), NLTKWordTokenizer()


def seed_persona_words(persona: str, lemma=None) -> list[str]:
    """The words the seed's script counts for one persona (see the module docstring)."""
    sentences_of, words_of = _nltk_tokenizers()
    lemma = lemma or lemmatizer()
    sentences = sentences_of.tokenize(persona.lower())
    text = sentences[0] if sentences else ""
    for marker in SEED_SPLITS:
        text = text.split(marker)[0]
    words = []
    for sentence in sentences_of.tokenize(text):
        for token in words_of.tokenize(sentence):
            word = token.lower().replace(",", "").replace(".", "").replace("'", "")
            if any(c.isalnum() for c in word):
                words.append(lemma(word))
    return words


def _seed_saliency(personas_by_label: Mapping[str, Iterable[str]], cutoff: int,
                   lemma) -> dict[str, list[tuple[str, float, int]]]:
    by_label = {label: Counter() for label in personas_by_label}
    total: Counter = Counter()
    for label, personas in personas_by_label.items():
        for persona in personas:
            words = seed_persona_words(persona, lemma)
            by_label[label].update(words)
            total.update(words)
    kept = [w for w, n in total.items() if n >= cutoff]
    return {label: sorted(((w, counts[w] / total[w], total[w]) for w in kept), key=lambda r: -r[1])
            for label, counts in by_label.items()}


def word_saliency(
    personas_by_label: Mapping[str, Iterable[str]],
    cutoff: int | None = None,
    stopwords: Iterable[str] = STOPWORDS,
    *,
    method: SaliencyMethod = "seed",
    lemmatizer_name: Lemmatizer = "simplemma",
) -> dict[str, list[tuple[str, float, int]]]:
    """Per label, (word, saliency, count(w)) for every word with count(w) >= cutoff (default 3 for
    `seed`, 10 for `ours`), by `method` (module docstring). `stopwords` apply to `ours` only."""
    if method not in METHOD_CUTOFF:
        raise UserError(f"unknown saliency method {method!r}: choose one of {', '.join(METHOD_CUTOFF)}")
    cutoff = METHOD_CUTOFF[method] if cutoff is None else cutoff
    if method == "seed":
        return _seed_saliency(personas_by_label, cutoff, lemmatizer(lemmatizer_name))
    stop = frozenset(stopwords)
    by_label: dict[str, Counter] = {}
    total: Counter = Counter()
    for label, personas in personas_by_label.items():
        counts = Counter(w for p in personas for w in persona_words(p) if w not in stop)
        by_label[label] = counts
        total.update(counts)
    out: dict[str, list[tuple[str, float, int]]] = {}
    for label, counts in by_label.items():
        rows = [(w, c / total[w], total[w]) for w, c in counts.items() if total[w] >= cutoff]
        out[label] = sorted(rows, key=lambda r: (-r[1], -r[2], r[0]))
    return out


def personas_by_side(examples: Iterable) -> dict[str, list[str]]:
    """`chosen` and `rejected` persona texts of `Example`s (records without one are skipped)."""
    labels: dict[str, list[str]] = {"chosen": [], "rejected": []}
    for ex in examples:
        for label, texts in labels.items():
            persona = ex.user.personas.get(f"{label}_persona")
            if persona:
                texts.append(persona)
    return labels


def saliency_json(result: Mapping[str, list[tuple[str, float, int]]]) -> dict[str, list[dict]]:
    """The JSON form written by `persona saliency --out` and read by the report."""
    return {label: [{"word": w, "saliency": s, "count": c} for w, s, c in rows] for label, rows in result.items()}


def write_saliency(path: str | os.PathLike, result: Mapping[str, list[tuple[str, float, int]]]) -> Path:
    """Write `saliency_json(result)` to `path` (atomically)."""
    return write_json(path, saliency_json(result))

"""Word saliency of personas (DESIGN §4): which words mark chosen vs. rejected personas.

Each persona is lower-cased, cut to its first sentence and then at the first contrast marker
("rather than", "over", "versus", "compared to", "instead of"), so that only the preferred side
of a comparison counts. The saliency of word w for label y is count(w, y) / count(w), over words
seen at least `cutoff` times in all labels together.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from personalign.files import write_json

STOPWORDS = frozenset(
    "a an the and or but of to in on for with by at from as is are was be been being it its this that "
    "these those who whom which what when where how than then so such their them they user users "
    "his her he she has have had do does not no more most very".split()
)

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


def word_saliency(
    personas_by_label: Mapping[str, Iterable[str]],
    cutoff: int = 10,
    stopwords: Iterable[str] = STOPWORDS,
) -> dict[str, list[tuple[str, float, int]]]:
    """Per label, (word, saliency, count(w)) for every word with count(w) >= cutoff that occurs
    under that label, sorted by saliency, then count, descending, then word."""
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

"""Reading a pairwise judge's verdict (1 or 2) out of free-form LLM output; shared by every judge."""
from __future__ import annotations

import re

_MARKUP = re.compile(r"[*_`#>\"'()\[\]{}]")
_EXPLICIT = re.compile(r"\[\[\s*([12ab])\s*\]\]", re.I)
_NAME = r"(?:response|answer|output|option|assistant|candidate|choice|persona)"
_ECHO = re.compile(
    rf"\b(?:{_NAME}\s*)?(?:1|a|first)\s*(?:or|and|/|,|vs\.?|versus)\s*(?:{_NAME}\s*)?(?:2|b|second)\b", re.I
)
_MENTION = re.compile(
    rf"(?<![\d.])(?P<digit>[12])(?!\d|\.\d)"
    rf"|\b{_NAME}\s*(?P<letter>[ab])\b"
    rf"|\b(?P<ordinal>first|second|former|latter)\b",
    re.I,
)
_WORD_VERDICT = {"a": 1, "b": 2, "first": 1, "former": 1, "second": 2, "latter": 2}


def parse_verdict(output: str) -> int | None:
    """1 or 2 from a judge's output, or None when it names neither.

    An explicit "[[1]]"/"[[A]]" wins; otherwise markup is stripped, echoes of the options ("1 or
    2", "Response A and Response B", "first or second") are removed, and the earliest mention of
    a position counts: a standalone 1/2 ("Response 2", "**2**", "2."), "Response A/B", or the
    words first/second/former/latter ("I prefer the second"). A bare "A"/"B" answer also counts.
    """
    m = _EXPLICIT.search(output)
    if m:
        return _WORD_VERDICT.get(m.group(1).lower()) or int(m.group(1))
    text = _ECHO.sub(" ", _MARKUP.sub(" ", output)).strip()
    if text.rstrip(".!").strip().lower() in ("a", "b"):
        return _WORD_VERDICT[text.rstrip(".!").strip().lower()]
    m = _MENTION.search(text)
    if m is None:
        return None
    if m.group("digit"):
        return int(m.group("digit"))
    return _WORD_VERDICT[(m.group("letter") or m.group("ordinal")).lower()]

"""Reading a pairwise judge's verdict (1 or 2, or None for a tie or no verdict) out of free-form
LLM output; shared by every judge.

A judge's *final* decision wins. The output is read in stages, and the first stage that finds
anything decides; within a stage the last statement in the text counts:

1. explicit markers: ``[[1]]``/``[[A]]`` (MT-Bench; ``[[C]]`` is a tie), ``[RESULT] B``
   (Prometheus-2 relative grading), ``Final verdict:``, ``Answer:``, ``Verdict:``, ``My pick:``,
   ``Choice:``, ``Recommendation:``, ``my answer would be``, ``the better one is``, ``the winner is``,
   ``Therefore, …``; and a closing line that names only the choice ("Response 2", "**A**", "-> 2",
   "Final Answer" then "Response 1" on the next line);
2. comparative statements: "X is better / more helpful / preferable …", "X is worse / weaker …"
   (the other one), "… is worse than Y" (Y), "… is better than Y" (the other one), "I choose /
   prefer / pick / select X", "X wins", "X suits … better";
3. tie statements: "equally good", "it's a tie", "neither is better";
4. a bare answer: every remaining mention of a position names the same one ("2", "**B**",
   "Output (a)", "Response 2").

Positions are 1/2, A/B (a bare letter only after a marker or a name such as "Response B", since
"a" is also an article), or first/second/former/latter. Echoes of the options ("Response 1 or
Response 2", "A and B") are removed before stages 2–4.
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Literal

_NAME = r"(?:response|answer|output|option|assistant|candidate|choice|persona|model|completion)"
_ORD = r"(?:first|second|former|latter)"
# A position: a name with a number or letter, a standalone number, or an ordinal (optionally "… one/response").
_POS = (rf"(?:(?:the\s+)?{_NAME}\s*\(?[12ab]\)?(?![\w])"
        rf"|(?<![\w.])\(?[12]\)?(?![\w]|\.\d)"
        rf"|(?:the\s+)?{_ORD}(?:\s+(?:one|{_NAME}))?\b)")
# After an explicit marker a bare letter counts too, and so does a tie letter/word.
_LOOSE = rf"(?:{_POS}|\(?[abc]\)?(?![\w])|tie\b)"
_MARKUP = re.compile(r"[*_`#>\"]")
_ECHO = re.compile(
    rf"\b(?:{_NAME}\s*)?\(?(?:1|a|first)\)?\s*(?:or|and|/|,|vs\.?|versus)\s*(?:{_NAME}\s*)?\(?(?:2|b|second)\)?(?![\w])",
    re.I,
)
_EXPLICIT = [
    re.compile(r"\[\[\s*(?P<p>[12abc]|tie)\s*\]\]", re.I),
    re.compile(rf"\[\s*result\s*\]\s*:?\s*(?P<p>{_LOOSE})", re.I),
    re.compile(rf"\b(?:final\s+(?:verdict|answer|decision|choice|judg(?:e)?ment)|verdict|answer|decision|choice|"
               rf"pick|selection|recommendation|winner|preferred\s+{_NAME}|better\s+(?:{_NAME}|one)|preference)"
               rf"\s*(?:is|:|=|-|would\s+be|will\s+be|has\s+to\s+be|must\s+be)\s*(?P<p>{_LOOSE})", re.I),
    # a closing line that names only the choice (after an optional arrow or heading line)
    re.compile(rf"(?:^|\n)[^\S\n]*(?:[-=]+>?|→|⇒)?[^\S\n]*(?P<p>{_LOOSE})[^\S\n]*[.!]?\s*$", re.I),
    re.compile(rf"\b(?:therefore|thus|hence|so|overall|in\s+conclusion)\s*,?\s+(?P<p>{_POS})"
               r"(?=\s+(?:is|wins|was|should|would|better|fits|suits)\b|\s*[.!]?\s*$)", re.I),
]
_BETTER = r"(?:better|best|superior|preferable|preferred|stronger|the\s+winner|more\s+\w+|the\s+more\s+\w+)"
_WORSE = r"(?:worse|worst|weaker|inferior|less\s+\w+|the\s+loser)"
_ADV = r"(?:(?:clearly|much|slightly|far|overall|significantly|definitely|somewhat|also|simply|thus|therefore)\s+)?"
_COMPARATIVE = [  # (pattern, names the winner?)
    (re.compile(rf"(?P<p>{_POS})\s+(?:is|was|seems|appears|looks|would\s+be)\s+{_ADV}{_BETTER}", re.I), True),
    (re.compile(rf"(?P<p>{_POS})\s+(?:is|was|seems|appears|looks)\s+{_ADV}{_WORSE}", re.I), False),
    (re.compile(rf"\bi(?:\s+would|'d|\s+will)?\s+(?:choose|prefer|pick|select|go\s+with|say|vote\s+for)\s+(?P<p>{_POS})",
                re.I), True),
    (re.compile(rf"(?P<p>{_POS})\s+(?:wins|outperforms|is\s+preferred|edges\s+out)\b", re.I), True),
    (re.compile(rf"(?P<p>{_POS})\s+(?:\w+\s+){{0,4}}?better\b(?!\s+if)", re.I), True),
    (re.compile(rf"(?P<p>{_POS})\s+(?:falls\s+short|fails|loses)\b", re.I), False),
    (re.compile(rf"\bprefer(?:red)?\s+(?P<p>{_POS})", re.I), True),
    (re.compile(rf"\b(?:is|was)\s+{_ADV}{_WORSE}\s+than\s+(?P<p>{_POS})", re.I), True),
    (re.compile(rf"\b(?:is|was)\s+{_ADV}(?:better|superior|stronger|more\s+\w+)\s+than\s+(?P<p>{_POS})", re.I), False),
]
_TIE = re.compile(r"\b(?:equally\s+\w+|(?:it'?s|a)\s+tie|tied|neither\s+(?:is|one\s+is)\s+(?:better|worse)|"
                  r"no\s+clear\s+winner|both\s+are\s+(?:equally|the\s+same))\b", re.I)
_MENTION = re.compile(rf"{_POS}|^\s*\(?[ab]\)?[.!]?\s*$", re.I)
_WORD = {"a": 1, "b": 2, "first": 1, "former": 1, "second": 2, "latter": 2}


def _position(text: str) -> int | None:
    """1 or 2 from one matched position phrase; None for a tie letter ("C") or word."""
    t = text.lower()
    if m := re.search(r"(?<![\d.])[12](?![\d])", t):
        return int(m.group())
    if m := re.search(_ORD, t):
        return _WORD[m.group()]
    if m := re.search(r"(?<![a-z])([abc])(?![a-z])", re.sub(_NAME, " ", t)):
        return _WORD.get(m.group(1))
    return None


def _last(patterns, text: str) -> tuple[int, int | None] | None:
    """(end offset, verdict) of the last match of any pattern, or None."""
    best = None
    for item in patterns:
        pattern, winner = item if isinstance(item, tuple) else (item, True)
        for m in pattern.finditer(text):
            p = _position(m.group("p"))
            verdict = p if winner or p is None else 3 - p
            if best is None or m.end() >= best[0]:
                best = (m.end(), verdict)
    return best


def parse_verdict(output: str) -> int | None:
    """1 or 2 from a judge's output; None when it calls a tie or names no position (see the module doc)."""
    text = _MARKUP.sub(" ", output)
    found = _last(_EXPLICIT, text)
    if found is not None:
        return found[1]
    text = _ECHO.sub(" ", text)
    found = _last(_COMPARATIVE, text)
    if found is not None:
        return found[1]
    if _TIE.search(text):
        return None
    named = {_position(m.group()) for m in _MENTION.finditer(text)}
    named.discard(None)
    return named.pop() if len(named) == 1 else None


# ------------------------------------------------------------------------ log-prob verdict mode

VerdictMode = Literal["generate", "logprob"]
CHOICES = ("1", "2")


class ChoiceProbs:
    """A backend adapter whose "generation" for a judge request is the JSON of the probabilities of
    the answers "1" and "2" as the next token (local models, or OpenAI-compatible servers that
    return `logprobs`), so the generation cache stores and resumes them like any output."""

    def __init__(self, backend: Any, choices: tuple[str, ...] = CHOICES):
        if not hasattr(backend, "choice_probs"):
            raise ValueError(f"backend {backend.identity} cannot read answer probabilities; use verdict mode 'generate'")
        self.backend, self.choices = backend, choices

    @property
    def identity(self) -> str:
        return f"{self.backend.identity}|choice-probs:{'/'.join(self.choices)}"

    def generate(self, requests: Sequence[Any], config: Any, *, progress: bool = True) -> list[str]:
        return [json.dumps(p) for p in self.backend.choice_probs(requests, self.choices)]


class ResultChoiceProbs(ChoiceProbs):
    """Log-prob verdicts of a judge that reasons first and names its choice after a marker (Prometheus:
    "Feedback: ... [RESULT] A"): the feedback is generated up to the marker (a stop sequence), the reply
    is then continued by the marker, and the probabilities of each choice as the next token are read.
    Outputs are the JSON probabilities, as `ChoiceProbs` stores them."""

    def __init__(self, backend: Any, marker: str, choices: tuple[str, ...]):
        super().__init__(backend, choices)
        self.marker = marker

    @property
    def identity(self) -> str:
        return f"{self.backend.identity}|after:{self.marker}|choice-probs:{'/'.join(self.choices)}"

    def generate(self, requests: Sequence[Any], config: Any, *, progress: bool = True) -> list[str]:
        stop = config.model_copy(update={"stop": [*config.stop, self.marker]})
        reasons = self.backend.generate(requests, stop, progress=progress)
        continued = [r + reason + self.marker if isinstance(r, str)
                     else [*r, {"role": "assistant", "content": reason + self.marker}]
                     for r, reason in zip(requests, reasons)]
        return [json.dumps(p) for p in self.backend.choice_probs(continued, self.choices)]


def judge_backend(backend: Any, mode: VerdictMode, *, after: str | None = None,
                  choices: tuple[str, ...] = CHOICES) -> Any:
    """The backend a judge runs its requests on: as is (generate), or its answer probabilities (logprob),
    read at once or, with `after`, after the judge's reasoning up to that marker."""
    if mode not in ("generate", "logprob"):
        raise ValueError(f"verdict mode must be 'generate' or 'logprob', got {mode!r}")
    if mode == "generate":
        return backend
    return ChoiceProbs(backend, choices) if after is None else ResultChoiceProbs(backend, after, choices)


def order_averaged(shown_first: str, shown_second: str) -> float | None:
    """P(the item shown first in the first request wins), from the two orders' answer probabilities:
    (P("1" | first order) + P("2" | swapped order)) / 2; None when either gave none. Position bias
    (a model that always says "1") cancels."""
    a, b = json.loads(shown_first), json.loads(shown_second)
    if a is None or b is None:
        return None
    return (a[0] + b[1]) / 2


def read_verdicts(outputs: Sequence[str], mode: VerdictMode) -> list[int | None]:
    """Verdicts of judge outputs that come in pairs (an item shown first, then shown second).

    generate: each output parsed on its own (`parse_verdict`). logprob: each pair decided together
    by `order_averaged`: above 0.5 the verdicts read (1, 2) (the item wins in both orders), below
    0.5 (2, 1), exactly 0.5 or unreadable (None, None), so every judge counts them as it counts
    parsed verdicts."""
    if mode == "generate":
        return [parse_verdict(o) for o in outputs]
    verdicts: list[int | None] = []
    for a, b in zip(outputs[0::2], outputs[1::2]):
        p = order_averaged(a, b)
        verdicts += [1, 2] if p is not None and p > 0.5 else [2, 1] if p is not None and p < 0.5 else [None, None]
    return verdicts

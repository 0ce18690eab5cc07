"""The one verdict parser every judge (persona accuracy/preference, pairwise win rates) uses."""
from __future__ import annotations

import pytest

from personalign.llm.verdict import parse_verdict


@pytest.mark.parametrize(
    ("output", "verdict"),
    [("1", 1), (" 2\n", 2), ("Response 2", 2), ("**2**", 2), ("Response **1** is better.", 1),
     ("I prefer the second", 2), ("I prefer the second one; Response 1 is weaker.", 2),
     ("The first response is better.", 1), ("[[A]]", 1), ("[[B]]", 2), ("[[2]]", 2), ("Verdict: [[1]]", 1),
     ("A", 1), ("B.", 2), ("Response B is more helpful", 2), ("Between Response 1 and Response 2, I choose 2", 2),
     ("Between Response 1 and Response 2, 2", 2), ("1 or 2? I pick 1", 1), ("Answer: 1.", 1), ("Answer: 2.", 2),
     ("I'd say 2, clearly", 2), ("Persona 1 or Persona 2? Persona 2", 2), ("Persona B", 2),
     ("10", None), ("1.5", None), ("neither", None), ("Response 1 and Response 2 are equally good", None),
     ("", None), ("I cannot decide.", None)],
)
def test_parse_verdict(output, verdict):
    assert parse_verdict(output) == verdict

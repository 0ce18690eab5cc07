"""The one verdict parser every judge (persona accuracy/preference, pairwise win rates) uses.

Each row is a realistic judge output of one style and the verdict a careful reader takes from it:
the judge's *final* decision, not the first position it mentions.
"""
from __future__ import annotations

import pytest

from personalign.llm.verdict import parse_verdict

SHORT = [  # terse answers, as small models and "reply 1 or 2" prompts give them
    ("1", 1), (" 2\n", 2), ("Response 2", 2), ("**2**", 2), ("A", 1), ("B.", 2), ("Output (a)", 1),
    ("Output (b)", 2), ("Persona 1 or Persona 2? Persona 2", 2), ("Persona B", 2), ("10", None), ("1.5", None),
    ("neither", None), ("", None), ("I cannot decide.", None),
]
MT_BENCH = [  # "[[A]]", "[[B]]", "[[C]]" for a tie, after an explanation
    ("Assistant A gives a correct but terse answer. Assistant B explains each step and is accurate. [[B]]", 2),
    ("Both assistants are accurate. However, Assistant A is more detailed, so my final verdict is: [[A]]", 1),
    ("Both responses are equally helpful and accurate. [[C]]", None),
    ("Assistant B repeats itself and misses the question; Assistant A answers it directly.\n\n[[A]]", 1),
    ("Verdict: [[2]]", 2), ("[[1]]", 1),
]
PROMETHEUS = [  # Prometheus-2 relative grading: "Feedback: ... [RESULT] A|B"
    ("Feedback: Response A is polite but ignores the user's request for brevity, while Response B is concise "
     "and fits the persona. [RESULT] B", 2),
    ("Feedback: Response B contains factual errors. Response A is accurate and complete, which matches the "
     "score rubric better. [RESULT] A", 1),
    ("Feedback: Both responses are fluent; Response B is longer. However Response A follows the persona. "
     "[RESULT] A", 1),
    ("Feedback: (Response A) is generic. (Response B) is tailored. [RESULT] (B)", 2),
    ("[RESULT] B", 2),
]
ALPACA = [  # AlpacaEval-style: which output is better, answered with an identifier or a sentence
    ("Output (b) is better because it answers the question.", 2),
    ("Output (a)", 1),
    ("Best output: Output (b)", 2),
]
REASONING = [  # free reasoning: the decision comes last
    ("The first answer is accurate but long; the second suits this user better, so the winner is 2", 2),
    ("Response 1 gives a clear plan. Response 2 rambles. Therefore, Response 1 is better.", 1),
    ("Let's compare. Response 1 is detailed. Response 2 is short and to the point, which this user wants. "
     "I choose Response 2.", 2),
    ("Response 1 is more polite, but Response 2 is more accurate and more helpful overall. Final answer: 2", 2),
    ("Response 2 mentions the user's budget, but Response 1 is better overall.", 1),
    ("While Response 1 starts strong, it is worse than Response 2 in accuracy.", 2),
    ("Response 2 is weaker: it ignores the persona.", 1),
    ("I would pick the second response.", 2),
    ("I prefer the second one; Response 1 is weaker.", 2),
    ("The first response is better.", 1),
    ("Response **1** is better.", 1),
    ("Response B is more helpful", 2),
    ("Between Response 1 and Response 2, I choose 2", 2),
    ("Between Response 1 and Response 2, 2", 2),
    ("1 or 2? I pick 1", 1),
    ("Answer: 1.", 1), ("Answer: 2.", 2),
    ("I'd say 2, clearly", 2),
    ("Both responses answer the question, and they are equally good.", None),
    ("Response 1 and Response 2 are equally good", None),
    ("It's a tie.", None),
    ("Neither is better; they say the same thing.", None),
    ("Response 1 is concise. Response 2 is detailed. Overall, Response 2 fits this persona.", 2),
    ("The latter is preferable for this user.", 2),
    ("The former response outperforms the other on every criterion.", 1),
    ("Response 2 falls short of the user's needs, so Response 1 wins.", 1),
    ("My decision: Response 1", 1),
    ("At first glance Response 1 is better, but on a closer reading Response 2 is better for this user.", 2),
    ("Initial verdict: [[A]]. Checking the facts again changes my mind. Final verdict: [[B]]", 2),
    ("Response 2 adds more detail, but both are equally helpful to this user.", None),
    ("Looking at the persona, the user wants brevity. Response 1 is three paragraphs; Response 2 is one line. "
     "Thus Response 2.", 2),
]

CLOSING = [  # the decision stated last, on a closing line or in a closing phrase of its own
    ("Response 1 is accurate but long; Response 2 is concise and fits the persona.\n\nResponse 2", 2),
    ("Both have merits: Response 1 is warmer, Response 2 is shorter.\n\n**Response 1**", 1),
    ("Response A explains the steps; Response B only lists them.\n\nA", 1),
    ("Response 1 covers more, Response 2 is friendlier.\nMy pick: 2", 2),
    ("Response 1 is on topic; Response 2 drifts. So my answer would be 1.", 1),
    ("Response 2 follows the persona more closely. I'll go with Response 2.", 2),
    ("Comparing both, Response 1 answers directly.\n\nFinal Answer\nResponse 1", 1),
    ("Response A and Response B are both fine, but B is more specific.\n\nChoice: B", 2),
    ("Response 1 is thorough. Response 2 is brief.\n\nThe better one is Response 2.", 2),
    ("Response 1 uses the user's name; Response 2 does not.\n\nRecommendation: Response 1", 1),
    ("Response 2 is more engaging, yet Response 1 is more accurate.\n\nMy final choice is Response 1.", 1),
    ("Response 1 is long. Response 2 is short.\n\n-> 2", 2),
]
CASES = SHORT + MT_BENCH + PROMETHEUS + ALPACA + REASONING + CLOSING


def test_table_is_large_and_covers_each_style():
    assert len(CASES) >= 40
    assert all(len(style) >= 3 for style in (SHORT, MT_BENCH, PROMETHEUS, ALPACA, REASONING, CLOSING))


@pytest.mark.parametrize(("output", "verdict"), CASES)
def test_parse_verdict(output, verdict):
    assert parse_verdict(output) == verdict

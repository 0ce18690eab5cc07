"""What every pairwise LLM judge shares: the worked examples its prompts show, its generation
settings, running its requests through the cache, and the both-orders rule.

Every judge asks about a pair twice, the items swapped between the two requests. An item wins
when the judge picks it in both orders; anything else (disagreement, or an output with no
readable verdict) is a tie (`agreement`). Verdicts are read from the text (`generate`) or from
the probabilities of the answers "1" and "2" (`logprob`, `personalign.llm.verdict`).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

from personalign.llm.base import Backend, GenerationConfig, Request
from personalign.llm.cache import generate_cached, open_cache
from personalign.llm.verdict import CHOICES, VerdictMode, judge_backend, read_verdicts
from personalign.models.loading import process_state

JUDGE_GENERATION = GenerationConfig(max_new_tokens=8, temperature=0.0)


@dataclass(frozen=True, slots=True)
class Shot:
    """A worked example: a prompt, the preferred and the other response, and the personas that
    would prefer each."""

    prompt: str
    preferred: str
    other: str
    persona: str
    other_persona: str


SHOTS: tuple[Shot, ...] = (
    Shot(
        prompt="How can I build up to running longer distances?",
        preferred="Raise your weekly distance by about a tenth at a time, keep most runs at an easy pace "
        "where you could still chat, and add one longer run each week. Rest days count as training too.",
        other="Push through the burn! Go a bit farther every single run and you'll be doing marathons in no time.",
        persona="The user is a methodical planner who wants steady, injury-free progress grounded in sound principles.",
        other_persona="The user is driven by enthusiasm and wants energetic encouragement more than a careful plan.",
    ),
    Shot(
        prompt="Can you explain what inflation is?",
        preferred="Inflation means prices creep up over time, so the same money buys less. If a sandwich costs "
        "$5 this year and $5.50 next year, that is 10% inflation.",
        other="Inflation is the rate of increase of the general price level, usually measured by a consumer price "
        "index and driven by demand-pull, cost-push and monetary factors.",
        persona="The user is new to the subject and wants plain language with an everyday example rather than jargon.",
        other_persona="The user has some background knowledge and values precise, technical definitions.",
    ),
    Shot(
        prompt="Write a short message turning down a coworker's invitation to a party.",
        preferred="Can't make it Saturday, sorry! Have a great time.",
        other="Thank you so much for thinking of me! I'm truly sorry, but I already have plans that weekend. "
        "I hope it's a wonderful evening, and I'd love to hear all about it on Monday.",
        persona="The user is a busy, direct communicator who prefers brief messages without extra pleasantries.",
        other_persona="The user cares about relationships and wants to soften a refusal with warmth and courtesy.",
    ),
    Shot(
        prompt="What should I see in Rome if I only have one day?",
        preferred="Start early at the Colosseum and the Forum, walk to the Pantheon and eat nearby, then finish "
        "at the Trevi Fountain and the Spanish Steps in the evening light.",
        other="Rome is full of history. According to legend it was founded in 753 BC by Romulus, and over the "
        "centuries it became the center of a vast empire.",
        persona="The user is a practical traveler who wants an actionable plan that makes the most of limited time.",
        other_persona="The user is a curious learner who enjoys background and history more than logistics.",
    ),
)


def run_judge(
    backend: Backend,
    requests: Sequence[Request],
    *,
    task: str,
    gen_config: GenerationConfig = JUDGE_GENERATION,
    cache_path: str | os.PathLike | None = None,
    chunk_size: int = 8,
    on_progress: Callable[[int], None] | None = None,
    mode: VerdictMode = "generate",
    answer_after: tuple[str, tuple[str, ...]] | None = None,
) -> tuple[list[str], list[int | None]]:
    """Outputs and verdicts of judge requests that come in pairs (an item shown first, then second),
    generated through the cache at `cache_path` under the cache-key task name `task`; under
    `accelerate launch` the requests are shared out over the processes (each returns them all).
    `answer_after` (marker, choices): a judge that reasons first; log-prob verdicts are read after the marker."""
    state = process_state()
    with open_cache(cache_path, state) if cache_path is not None else nullcontext() as cache:
        after, choices = answer_after if answer_after is not None else (None, CHOICES)
        outputs = generate_cached(judge_backend(backend, mode, after=after, choices=choices), list(requests),
                                  gen_config, task=task, cache=cache,
                                  chunk_size=chunk_size, on_progress=on_progress, state=state).outputs
    return outputs, read_verdicts(outputs, mode)


def agreement(shown_first: int | None, swapped: int | None) -> int:
    """+1 when the item shown first in the first request wins in both orders (verdicts 1 then 2),
    −1 when the other item does (2 then 1), 0 (a tie) otherwise."""
    if shown_first == 1 and swapped == 2:
        return 1
    if shown_first == 2 and swapped == 1:
        return -1
    return 0

"""In-memory form of every record: an `Example` with responses ranked best-first and a `UserContext`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

N_DIMENSIONS = 90

# Record keys (docs/formats.md, "Input records").
PROMPT, CHOSEN, REJECTED = "prompt", "chosen", "rejected"
DIRECTION = "Preference Direction"
DEMOGRAPHIC = "Demographic Information"
UGC = "User-Generated Content"
PAIRS = "Pair-wise Comparative Feedback"
GOLD_PERSONA = "ground_truth_persona"
PROFILE = "profile"
RESPONSES, REWARDS = "responses", "rewards"
COMPLETION, LABEL = "completion", "label"  # TRL unpaired preference (KTO): one completion, desirable or not

# Persona columns: canonical name -> accepted aliases (persona-tailoring dataset names).
PERSONA_KEYS: dict[str, tuple[str, ...]] = {
    "chosen_persona": ("chosen_persona_gold",),
    "rejected_persona": ("rejected_persona_gold",),
    "retrieved_chosen_persona": ("chosen_persona_retr",),
    "retrieved_rejected_persona": ("rejected_persona_retr",),
}
# Persona source (a view's `persona_source`) -> the record fields its text is read from, first found wins.
PERSONA_SOURCE_FIELDS: dict[str, tuple[str, ...]] = {
    "chosen": ("chosen_persona", GOLD_PERSONA),
    "gold": (GOLD_PERSONA, "chosen_persona"),
    "rejected": ("rejected_persona",),
    "retrieved": ("retrieved_chosen_persona",),
    "retrieved_rejected": ("retrieved_rejected_persona",),
}


@dataclass(slots=True)
class Comment:
    """A user-generated content item: a post and the user's comment on it."""

    prompt: str
    comment: str
    direction: list[float] | None = None


@dataclass(slots=True)
class Pair:
    """A past pairwise judgement of the user."""

    prompt: str
    chosen: str
    rejected: str
    direction: list[float] | None = None


@dataclass(slots=True)
class UserContext:
    """Everything known about the user behind a record."""

    demographic: str | None = None
    ugc: list[Comment] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)
    direction: list[float] | None = None
    profile: str | None = None
    personas: dict[str, str] = field(default_factory=dict)

    def persona(self, source: str = "chosen") -> str | None:
        """Persona text of a source (`PERSONA_SOURCE_FIELDS`): chosen (falls back to gold), gold, rejected, retrieved."""
        if source not in PERSONA_SOURCE_FIELDS:
            raise ValueError(f"unknown persona source {source!r}")
        return next((self.personas[f] for f in PERSONA_SOURCE_FIELDS[source] if self.personas.get(f)), None)

    @property
    def slice(self) -> str:
        """Conditioning slice for per-slice metrics: ugc, pairs, demographic, all, none, mixed."""
        has = (bool(self.ugc), bool(self.pairs), bool(self.demographic))
        if all(has):
            return "all"
        if not any(has):
            return "none"
        if sum(has) == 1:
            return ("ugc", "pairs", "demographic")[has.index(True)]
        return "mixed"


@dataclass(slots=True)
class Example:
    """One preference example: a prompt and its responses ranked best-first."""

    prompt: str
    responses: list[str]
    rewards: list[float] | None = None
    user: UserContext = field(default_factory=UserContext)
    extra: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    label: bool | None = None
    """An unpaired completion's own label (TRL's KTO format: desirable or not); None for pairs and rankings,
    whose labels come from position. Kept apart from `rewards`."""

    @property
    def chosen(self) -> str:
        return self.responses[0]

    @property
    def rejected(self) -> str:
        return self.responses[-1]

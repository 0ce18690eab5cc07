"""Views (docs/formats.md, "Views and templates"): an `Example` plus the user's signals -> one prompt string and its ranked responses.

History order: UGC items, then past pairs, each in record order; this one list is taken as
chronological (oldest first), both for rendering and for dropping items when a prompt is too long.

Length (only with `max_length` and a tokenizer): a prompt fits when tokens(prompt) + the longest
response's tokens + 1 (EOS) <= max_length, counting prompt tokens as `personalign.records.tokens.prompt_ids`
does (BOS added only where the tokenizer's convention adds one and the text lacks it). If it does not fit, the oldest history
items are dropped (a search over how many newest items to keep, guided by each item's own token
count and re-rendering and re-tokenizing the whole prompt at each probe, so the count is exact); if not even the newest item
fits alone, it is kept with its text left-truncated at token level (`history_cut`); if the prompt
without any history is still too long, it is rendered without history and marked `overlong` (the
log-prob engine truncates responses). A record is never dropped.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

from pydantic import PositiveInt, model_validator

from personalign.config import StrictModel
from personalign.records.dimensions import load_dimensions
from personalign.records.errors import RecordError
from personalign.records.schema import PERSONA_SOURCE_FIELDS, Comment, Example, Pair, UserContext
from personalign.records.tokens import prompt_ids, text_ids, with_bos
from personalign.views.profile import user_profile
from personalign.views.templates import Prompt, TemplateName, ViewName, build_prompt, check_view, history_text

MAX_SAMPLED = 4  # AlignX training: at most 4 UGC items and 4 pairs per record

# Persona sources that explain the *rejected* response: under them the rejected response is the
# preferred one (persona-tailoring swaps the two), for training targets, accuracies and generation.
REJECTED_SIDE = frozenset({"rejected", "retrieved_rejected"})
# The persona-tailoring seed's inference/training type names, accepted as `persona_source` values.
SEED_PERSONA_TYPES = {"gold_chosen": "chosen", "gold_rejected": "rejected", "retr_chosen": "retrieved",
                      "retr_rejected": "retrieved_rejected"}
PersonaSource = Literal["chosen", "gold", "rejected", "retrieved", "retrieved_rejected", "all", "system",
                        "chosen_in_system"]
# What a command line accepts: the sources plus the seed's names.
PersonaSourceName = Literal["chosen", "gold", "rejected", "retrieved", "retrieved_rejected", "all", "system",
                            "chosen_in_system", "gold_chosen", "gold_rejected", "retr_chosen", "retr_rejected"]
# The persona-tailoring seed's `system` inference type: one fixed, generic persona per dataset
# (`model/data_loader.py`, `DataLoader.SYSTEM_PERSONA_MAP`), written where a record's persona goes.
SYSTEM_PERSONAS = {
    "BeaverTails": "The user is meticulous and prefers responses that cover multiple, diverse angles.",
    "Mnemonic": "The user prefers indirect, step-by-step mnemonics that capture the essence of the vocabulary term.",
    "Anthropic HHH": "The user is solution-focused, results-oriented, and fact-oriented, and prefers responses that "
                     "cover varied angles.",
}


def persona_sides(source: str) -> tuple[str, ...]:
    """The persona sources one record renders under: both sides for the training type `all`."""
    return ("chosen", "rejected") if source == "all" else (source,)


def preferred_order(responses: list[str], rewards: list[float] | None, persona_source: str
                    ) -> tuple[list[str], list[float] | None]:
    """Responses best-first *for the persona's user*: reversed under a rejected-side persona (rewards
    reversed and negated, so they stay descending and keep their differences)."""
    if persona_source not in REJECTED_SIDE:
        return responses, rewards
    return responses[::-1], None if rewards is None else [-r for r in rewards[::-1]]


class ViewConfig(StrictModel):
    """How examples become prompts."""

    view: ViewName = "none"
    """What conditions the prompt: none, ica (history), pba (preference profile), persona, demo (demographics)."""
    template: TemplateName = "chat"
    """Prompt layout: chat (the tokenizer's chat template), alignx, alignx-eval (AlignX's), plain (persona-tailoring's)."""
    sample_history: bool = False
    """AlignX training-style history sampling; False = all history (evaluation)."""
    seed: int = 0
    """Seed of the history sampling."""
    include_demographic: bool = False
    """ica: append the demographic text (always in alignx-eval)."""
    persona_source: PersonaSource = "chosen"
    """persona view: which persona conditions the prompt. rejected/retrieved_rejected make the rejected
    response the preferred one; all renders each record twice (chosen persona with the chosen response
    preferred, rejected persona with the rejected one); system is the seed's baseline: one fixed generic
    persona (`system_persona`) for every record, in the persona layout; chosen_in_system puts the
    record's chosen persona in the chat system message (ours). Seed names (gold_chosen, ...) are accepted."""
    system_persona: str | None = None
    """persona_source system: the fixed persona, as the seed's dataset name (BeaverTails, Mnemonic,
    Anthropic HHH) or your own text."""
    max_length: PositiveInt | None = None
    """Token budget of a rendered prompt + response (history is dropped to fit)."""
    dimensions: str | None = None
    """Dimension table (JSON) for pba profiles; default: the 90 AlignX dimensions shipped with personalign."""

    @model_validator(mode="before")
    @classmethod
    def _seed_persona_names(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("persona_source") in SEED_PERSONA_TYPES:
            data = {**data, "persona_source": SEED_PERSONA_TYPES[data["persona_source"]]}
        return data

    @model_validator(mode="after")
    def _view_fits_template(self) -> ViewConfig:
        check_view(self.template, self.view)
        if self.view == "persona" and self.persona_source == "chosen_in_system" and self.template != "chat":
            raise ValueError("persona_source 'chosen_in_system' puts the persona in the system message: it needs "
                             "template 'chat'")
        if self.view == "persona" and self.persona_source == "system" and not self.system_persona:
            raise ValueError("persona_source 'system' (the seed's generic persona) needs system_persona: "
                             f"{', '.join(SYSTEM_PERSONAS)}, or your own text")
        return self

    @property
    def fixed_persona(self) -> str | None:
        """The one persona every record gets under persona_source system, else None."""
        if self.persona_source != "system" or not self.system_persona:
            return None
        return SYSTEM_PERSONAS.get(self.system_persona, self.system_persona)


@dataclass(slots=True)
class Rendered:
    """One rendered example. `history_used` / `history_dropped` count history items written into /
    dropped (for length) from an ica prompt. `missing` names conditioning that was absent ("profile",
    "demographic"), in which case the prompt is the `none` layout. `slice` is `UserContext.slice`."""

    prompt: str
    responses: list[str]
    rewards: list[float] | None
    history_used: int
    history_dropped: int
    history_cut: bool
    overlong: bool
    slice: str
    source: str
    missing: str | None = None
    messages: list[dict[str, str]] | None = None  # chat template: the messages `prompt` was rendered from
    label: bool | None = None  # an unpaired completion's own label (`Example.label`), never reordered


@dataclass(slots=True)
class ViewCounts:
    """Per-run counters over rendered examples."""

    records: int = 0
    history_used: int = 0
    history_dropped: int = 0
    truncated: int = 0
    history_cut: int = 0
    overlong: int = 0
    no_profile: int = 0
    no_demographic: int = 0

    def add(self, r: Rendered) -> None:
        self.records += 1
        self.history_used += r.history_used
        self.history_dropped += r.history_dropped
        self.truncated += bool(r.history_dropped or r.history_cut)
        self.history_cut += r.history_cut
        self.overlong += r.overlong
        self.no_profile += r.missing == "profile"
        self.no_demographic += r.missing == "demographic"

    def summary(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _subset(rng: random.Random, n: int, k: int) -> list[int]:
    """A uniformly random k-subset of range(n), in increasing order (random keys, k smallest)."""
    if k >= n:
        return list(range(n))
    keys = [rng.random() for _ in range(n)]
    return sorted(sorted(range(n), key=keys.__getitem__)[:k])


def select_history(user: UserContext, cfg: ViewConfig, index: int) -> tuple[list[Comment], list[Pair]]:
    """All history, or (sample_history) AlignX's draw: u, p = randint(0, 4) each, capped by what
    exists, all up to 4 each if both are 0; a seeded subset in record order, seeded by (seed, index)."""
    if not cfg.sample_history:
        return list(user.ugc), list(user.pairs)
    rng = random.Random(cfg.seed * 1_000_003 + index)
    draws = MAX_SAMPLED + 1
    n_ugc = min(int(rng.random() * draws), len(user.ugc))
    n_pairs = min(int(rng.random() * draws), len(user.pairs))
    if not (n_ugc or n_pairs):
        n_ugc, n_pairs = min(MAX_SAMPLED, len(user.ugc)), min(MAX_SAMPLED, len(user.pairs))
    ugc, pairs = user.ugc, user.pairs
    return [ugc[i] for i in _subset(rng, len(ugc), n_ugc)], [pairs[i] for i in _subset(rng, len(pairs), n_pairs)]


def build_view(ex: Example, cfg: ViewConfig, tokenizer: Any = None, index: int = 0) -> Rendered:
    """Render `ex` under `cfg`; `index` (the record's position) seeds history sampling.

    Under a rejected-side persona the responses come back with the rejected one first (it is the
    one that persona prefers). `persona_source='all'` needs `render_views`, which renders both sides.
    """
    if cfg.view == "persona" and cfg.persona_source == "all":
        raise ValueError("persona_source 'all' renders two examples per record: use render_views")
    user = ex.user
    view, block, missing = cfg.view, "", None
    responses, rewards = ex.responses, ex.rewards
    items: list[Comment | Pair] = []
    if cfg.view in ("ica", "pba"):
        ugc, pairs = select_history(user, cfg, index)
        items = [*ugc, *pairs]
    if cfg.view == "pba":
        dims = None if user.profile else load_dimensions(cfg.dimensions)
        block = user_profile(user, items, dims) or ""
        items = []
    elif cfg.view == "persona":
        source = "chosen" if cfg.persona_source in ("system", "chosen_in_system") else cfg.persona_source
        block = cfg.fixed_persona or user.persona(source) or ""
        responses, rewards = preferred_order(ex.responses, ex.rewards, cfg.persona_source)
        if not block:
            field = PERSONA_SOURCE_FIELDS[source][0]
            why = f"no persona text (persona_source={cfg.persona_source!r})"
            raise RecordError(ex.source or "<record>", None, field, why)
    elif cfg.view == "demo":
        block = user.demographic or ""
    if cfg.view in ("pba", "demo") and not block:
        view, missing = "none", "profile" if cfg.view == "pba" else "demographic"
    with_demo = cfg.view == "ica" and (cfg.include_demographic or cfg.template == "alignx-eval")
    demographic = user.demographic if with_demo else None

    in_system = view == "persona" and cfg.persona_source == "chosen_in_system"

    def render(text: str) -> Prompt:
        return build_prompt(cfg.template, view, ex.prompt, text, demographic, tokenizer, persona_in_system=in_system)

    def result(prompt: Prompt, used: int, cut: bool = False, overlong: bool = False) -> Rendered:
        dropped = len(items) - used
        return Rendered(prompt.text, responses, rewards, used, dropped, cut, overlong, user.slice, ex.source, missing,
                        prompt.messages, ex.label)

    prompt = render(_history(items) if view == "ica" else block)
    if cfg.max_length is None or tokenizer is None:
        return result(prompt, len(items))

    def n_tokens(text: str) -> int:
        return len(prompt_ids(tokenizer, text))

    budget = cfg.max_length - 1 - max(len(with_bos(tokenizer, ids)) for ids in text_ids(tokenizer, responses))
    if (full := n_tokens(prompt.text)) <= budget:
        return result(prompt, len(items))
    if view != "ica":
        return result(prompt, 0, overlong=True)
    return result(*_fit_history(items, render, n_tokens, budget, tokenizer, full))


def _fit_history(
    items: list[Comment | Pair],
    render: Callable[[str], Prompt],
    n_tokens: Callable[[str], int],
    budget: int,
    tokenizer: Any,
    full: int,
) -> tuple[Prompt, int, bool, bool]:
    """(prompt, items used, history cut, overlong) for an ica prompt whose full history (`full` tokens) is
    over `budget`.

    The number of newest items kept is searched exactly (each probe renders and counts the whole
    prompt), but the first probe is a guess: the history's tokens shared out over the items in
    proportion to their lengths in characters; the second probe is its neighbour. Usually two probes
    instead of a binary search's log2(items)."""
    empty = render("")
    base = n_tokens(empty.text)
    if not items or base > budget:
        return empty, 0, False, True
    sizes = [len(_history([h])) for h in items]
    per_char = (full - base) / sum(sizes)
    guess, used = 0, float(base)
    while guess < len(items) and used + per_char * sizes[len(items) - 1 - guess] <= budget:
        used += per_char * sizes[len(items) - 1 - guess]
        guess += 1
    lo, hi, best = 0, len(items) - 1, empty  # keep the newest k items: k = lo fits, k > hi does not
    first, probe = min(max(guess, 1), hi), 0
    while lo < hi:
        k = first if probe == 0 else (first + 1 if lo == first else first - 1) if probe == 1 else (lo + hi + 1) // 2
        k, probe = min(max(k, lo + 1), hi), probe + 1
        candidate = render(_history(items[len(items) - k :]))
        if n_tokens(candidate.text) <= budget:
            lo, best = k, candidate
        else:
            hi = k - 1
    if lo > 0:
        return best, lo, False, False
    ids = tokenizer(_history(items[-1:]), add_special_tokens=False)["input_ids"]
    keep = len(ids)
    while keep > 0:
        candidate = render(tokenizer.decode(ids[-keep:], clean_up_tokenization_spaces=False))
        over = n_tokens(candidate.text) - budget
        if over <= 0:
            return candidate, 1, True, False
        keep -= over
    return empty, 0, False, False


def _history(items: Sequence[Comment | Pair]) -> str:
    return history_text([h for h in items if isinstance(h, Comment)], [h for h in items if isinstance(h, Pair)])


def render_views(examples: Iterable[Example], cfg: ViewConfig, tokenizer: Any = None) -> Iterator[Rendered]:
    """Stream `build_view` over `examples`, each seeded by its position; under the persona training
    type `all` each record yields its chosen-persona example, then its rejected-persona example."""
    sides = persona_sides(cfg.persona_source) if cfg.view == "persona" else (cfg.persona_source,)
    per_side = [cfg if s == cfg.persona_source else cfg.model_copy(update={"persona_source": s}) for s in sides]
    for index, ex in enumerate(examples):
        for side_cfg in per_side:
            yield build_view(ex, side_cfg, tokenizer, index)

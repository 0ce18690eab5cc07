"""Synthetic preference data with a real, user-dependent learning signal.

`synth_records` draws one latent user per record: a sparse direction vector (most of the 90
dimensions at 0.5, a handful at 0 or 1, each side equally likely). The record's `Preference
Direction` is the user's vector; every history item carries a noisy copy of it, so the PBA rule
recovers the user's preferences. Every reply (target pair, past pairs) realizes a few of the
active dimensions as text (a sentence from `STYLE`, or structure: concise vs detailed, numbered
list vs paragraph); the chosen reply takes the user's side and the rejected one the opposite side.
Because each side is the preferred one for half the users, the text of a reply alone does not
predict which one was chosen: only the user's history does.

`synth_ranking` makes ranking records (prompt, `responses` best-first, descending `rewards`).
All output is deterministic in the seed; texts come from precomputed banks, so generation is fast.
"""
from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from importlib import resources

from personalign.records.dimensions import Dimension, load_dimensions
from personalign.records.schema import DEMOGRAPHIC, DIRECTION, N_DIMENSIONS, PAIRS, UGC

CONCISE, ORDER = 16, 23  # dimensions also realized through structure: reply length, numbered list


def _frozen(value):
    """JSON lists as tuples, all the way down (the tables are read-only)."""
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


def _load_phrases() -> dict[str, object]:
    """The phrase tables (`personalign/resources/synth_phrases.json`): lists as tuples; a table stored as
    [key, value] pairs is a dict (keys: a dimension, a task, a side 1/0/None, a pair of subjects)."""
    raw = json.loads(resources.files("personalign").joinpath("resources", "synth_phrases.json").read_text(encoding="utf-8"))
    raw.pop("about")
    return {name: dict(_frozen(table)) if name in _DICTS else _frozen(table) for name, table in raw.items()}


_DICTS = frozenset({"style", "explain", "recommend", "compare", "prompts", "openers", "closers", "react",
                    "ages", "genders"})
_P = _load_phrases()
# dimension -> (sentences for value 1, sentences for value 0); an empty side means "not mentioned".
STYLE: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = _P["style"]
_ADVICE_GOALS, _ADVICE_BODY, _EXPLAIN = _P["advice_goals"], _P["advice_body"], _P["explain"]
_RECOMMEND, _REWRITE, _STORY_HEROES = _P["recommend"], _P["rewrite"], _P["story_heroes"]
_STORY_BODY, _COMPARE, _MESSAGES = _P["story_body"], _P["compare"], _P["messages"]
_MESSAGE_BODY, _PROMPTS, _OPENERS = _P["message_body"], _P["prompts"], _P["openers"]
_CLOSERS, _POSTS, _REACT = _P["closers"], _P["posts"], _P["react"]
_COMMENT_TAILS, _AGES, _GENDERS = _P["comment_tails"], _P["ages"], _P["genders"]
_JOBS, _PLACES, _RANK_FILLERS = _P["jobs"], _P["places"], _P["rank_fillers"]


def _self_description(phrase: str) -> str:
    """'Likes cars' -> 'someone who likes cars';
    'Strong need for Order (...)' -> 'someone with a strong need for order'."""
    text = phrase.split(" (")[0]
    first = text.split()[0]
    low = text[0].lower() + text[1:]
    if first in ("Likes", "Dislikes", "Prefers"):
        return "someone who " + low
    if first in ("Strong", "Concise", "Detailed"):
        return "someone with a " + low.lower()
    if first in ("High", "Low"):
        return "someone with " + low.lower()
    if first in ("Aggressive", "Conservative"):
        return "someone who prefers " + low
    if first in ("Female", "Male"):
        return "a woman" if first == "Female" else "a man"
    return "someone " + low.lower()


_ORDERED_TASKS = frozenset({"story", "message"})  # body sentences must keep their order
_POOL_SIZE = 4096
_LENGTHS = (1, None, 6)  # concise, default (2-4), detailed: body sentences per reply


def _tasks() -> list[tuple[str, list[tuple[str, tuple[str, ...]]]]]:
    """(task type, [(subject, reply body sentences)])."""
    return [
        ("advice", [(g, _ADVICE_BODY) for g in _ADVICE_GOALS]),
        ("explain", list(_EXPLAIN.items())),
        ("recommend", list(_RECOMMEND.items())),
        ("rewrite", [(s, (r,)) for s, r in _REWRITE]),
        ("story", [(h, tuple(b.format(ref=r) for b in _STORY_BODY)) for h, r in _STORY_HEROES]),
        ("message", [(f"{who} about {what}", tuple(b.format(matter=what) for b in _MESSAGE_BODY))
                     for who, what in _MESSAGES]),
        ("compare", [(f"{a} or {b}", body) for (a, b), body in _COMPARE.items()]),
    ]


def _content_pool(rng: random.Random) -> list[tuple[str, tuple[str, ...], str]]:
    """Precomputed reply contents: (prompt, 6 reply bodies, closer); body index is
    length kind (concise, default, detailed) * 2 + numbered."""
    tasks = _tasks()
    pool = []
    for _ in range(_POOL_SIZE):
        task, subjects = rng.choice(tasks)
        subject, body = rng.choice(subjects)
        prompt = rng.choice(_PROMPTS[task]).format(s=subject)
        opener = rng.choice(_OPENERS[task]).format(s=subject)
        default = rng.randint(2, 4)
        bodies = []
        for length in _LENGTHS:
            n = min(length or default, len(body))
            start = 0 if task in _ORDERED_TASKS else rng.randrange(len(body) - n + 1)
            sents = body[start:start + n]
            bodies.append(" ".join([opener, *sents]))
            bodies.append(opener + "\n" + "\n".join(f"{i + 1}. {x}" for i, x in enumerate(sents)))
        pool.append((prompt, tuple(bodies), rng.choice(_CLOSERS[task])))
    return pool


class _Gen:
    """One seeded generator over precomputed banks (kept fast: a few lookups per text)."""

    def __init__(self, seed: int, dims: Sequence[Dimension]):
        rng = random.Random(seed)
        self.rand = rng.random
        self.pool = _content_pool(rng)
        # real[d][user side] = (sentences realizing the user's side, sentences realizing the other side)
        self.real = [{1: STYLE[d], 0: STYLE[d][::-1]} for d in range(N_DIMENSIONS)]
        self.self_desc = [(_self_description(d.negative), _self_description(d.positive)) for d in dims]
        self.interests = {d.index: d.positive.removeprefix("Likes ") for d in dims if d.group == "interests"}
        self.posts_by_topic: dict[int, list[str]] = {}
        for topic, post in _POSTS:
            self.posts_by_topic.setdefault(topic, []).append(post)
        self.post_topics = list(self.posts_by_topic)

    def pick(self, seq):
        return seq[int(self.rand() * len(seq))]

    def user(self, k_range: tuple[int, int]) -> tuple[list, list[int]]:
        """A sparse direction vector: k random dimensions at 0 or 1 (equally likely), the rest 0.5."""
        rand = self.rand
        lo, hi = k_range
        k = min(lo + int(rand() * (hi - lo + 1)), N_DIMENSIONS)
        chosen: set[int] = set()
        while len(chosen) < k:
            chosen.add(int(rand() * N_DIMENSIONS))
        active = sorted(chosen)
        vec: list = [0.5] * N_DIMENSIONS
        for d in active:
            vec[d] = 1 if rand() < 0.5 else 0
        return vec, active

    def noisy(self, vec: list, active: list[int]) -> list:
        """A history item's direction: each active value kept w.p. 0.75, else neutral (0.2) or
        flipped (0.05); w.p. 0.3 one more random dimension set to 0 or 1."""
        v = vec[:]
        rand = self.rand
        for d in active:
            r = rand()
            if r < 0.25:
                v[d] = 0.5 if r < 0.2 else 1 - v[d]
        if rand() < 0.3:
            d = int(rand() * N_DIMENSIONS)
            if v[d] == 0.5:
                v[d] = 1 if rand() < 0.5 else 0
        return v

    def reply_pair(self, vec: list, active: list[int]) -> tuple[str, str, str]:
        """(prompt, chosen, rejected): both replies share the content and realize 1-3 of the
        active dimensions, the chosen one on the user's side and the rejected one on the other."""
        rand, real = self.rand, self.real
        prompt, bodies, closer = self.pool[int(rand() * _POOL_SIZE)]
        n = len(active)
        shown = {active[int(rand() * n)] for _ in range(1 + int(rand() * 3))} if n else ()
        variant = int(rand() * 6)
        agree, other = [], []
        kind_a = kind_o = 1  # body length: 0 concise, 1 default, 2 detailed
        num_a = num_o = 0  # numbered list
        for d in shown:
            side = vec[d]
            a, o = real[d][side]
            if a:
                agree.append(a[variant % len(a)])
            if o:
                other.append(o[variant % len(o)])
            if d == CONCISE:
                kind_a, kind_o = (0, 2) if side == 1 else (2, 0)
            elif d == ORDER:
                num_a, num_o = side, 1 - side
        chosen, rejected = bodies[2 * kind_a + num_a], bodies[2 * kind_o + num_o]
        if agree:
            chosen += ("\n\n" if num_a else " ") + " ".join(agree)
        if other:
            rejected += ("\n\n" if num_o else " ") + " ".join(other)
        if closer:
            chosen, rejected = f"{chosen} {closer}", f"{rejected} {closer}"
        return prompt, chosen, rejected

    def comment(self, vec: list, active: list[int], topics: list[int]) -> tuple[str, str]:
        """(post, the user's comment): half the time a post on a topic the user has a side on
        (`topics`); the comment reacts to the topic and adds a self-description."""
        pick = self.pick
        topic = pick(topics) if topics and self.rand() < 0.5 else pick(self.post_topics)
        side = vec[topic]
        text = pick(_REACT[None if side == 0.5 else side])
        if active:
            d = pick(active)
            text += f" As {self.self_desc[d][vec[d] == 1]}, {pick(_COMMENT_TAILS)}"
        return pick(self.posts_by_topic[topic]), text

    def demographic(self, vec: list, active: list[int]) -> str:
        lo, hi = _AGES[None if vec[0] == 0.5 else vec[0]]
        gender = self.pick(_GENDERS[None if vec[1] == 0.5 else vec[1]])
        job = self.pick(_JOBS)
        article = "an" if job[0] in "aeiou" else "a"
        age = lo + int(self.rand() * (hi - lo + 1))
        text = f"A {age}-year-old {gender} working as {article} {job} in {self.pick(_PLACES)}"
        likes = [self.interests[d] for d in active if d in self.interests and vec[d] == 1][:2]
        if likes:
            text += " who enjoys " + " and ".join(likes)
        return text + "."


def synth_records(
    n: int,
    *,
    seed: int = 0,
    ugc_per_user: int = 4,
    pairs_per_user: int = 4,
    dimensions: Sequence[Dimension] | None = None,
    active_range: tuple[int, int] = (4, 10),
) -> Iterator[dict]:
    """Yield `n` AlignX-format records, one latent user each (see the module docstring).

    `dimensions` is the dimension table (default: `load_dimensions()`); `active_range` bounds how
    many dimensions a user holds a non-neutral preference on.
    """
    dims = dimensions if dimensions is not None else load_dimensions()
    if len(dims) != N_DIMENSIONS:
        raise ValueError(f"expected {N_DIMENSIONS} dimensions, got {len(dims)}")
    lo, hi = active_range
    if not 0 <= lo <= hi <= N_DIMENSIONS:
        raise ValueError(f"active_range must satisfy 0 <= low <= high <= {N_DIMENSIONS}, got {active_range}")
    return _records(n, _Gen(seed, dims), ugc_per_user, pairs_per_user, active_range)


def _records(n: int, g: _Gen, ugc_per_user: int, pairs_per_user: int, active_range: tuple[int, int]) -> Iterator[dict]:
    noisy, reply_pair, comment = g.noisy, g.reply_pair, g.comment
    for _ in range(n):
        vec, active = g.user(active_range)
        topics = [d for d in active if d in g.posts_by_topic]
        ugc = []
        for _ in range(ugc_per_user):
            post, text = comment(vec, active, topics)
            ugc.append({"prompt": post, "comment": text, DIRECTION: noisy(vec, active)})
        pairs = []
        for _ in range(pairs_per_user):
            v = noisy(vec, active)
            shown = [d for d in active if v[d] != 0.5]
            p, c, r = reply_pair(v, shown) if shown else reply_pair(vec, active)
            pairs.append({"prompt": p, "chosen": c, "rejected": r, DIRECTION: v})
        prompt, chosen, rejected = reply_pair(vec, active)
        yield {
            "prompt": prompt,
            "chosen": chosen,
            "rejected": rejected,
            DIRECTION: vec,
            DEMOGRAPHIC: g.demographic(vec, active),
            UGC: ugc,
            PAIRS: pairs,
        }


_RANKING_TASKS = ("advice", "explain", "recommend", "compare")
MAX_RANKING_K = 3 + len(_RANK_FILLERS)


def synth_ranking(n: int, *, k: int = 4, seed: int = 0) -> Iterator[dict]:
    """Yield `n` ranking records: `prompt` (sometimes a multi-turn dialogue), `k` `responses`
    best-first (complete, then shorter, then vague, then unhelpful) and strictly descending `rewards`."""
    if not 2 <= k <= MAX_RANKING_K:
        raise ValueError(f"k must be between 2 and {MAX_RANKING_K}, got {k}")
    return _ranking(n, k, random.Random(seed))


def _ranking(n: int, k: int, rng: random.Random) -> Iterator[dict]:
    rand = rng.random
    tasks = [t for t in _tasks() if t[0] in _RANKING_TASKS]
    for _ in range(n):
        task, subjects = tasks[int(rand() * len(tasks))]
        subject, body = subjects[int(rand() * len(subjects))]
        question = _PROMPTS[task][int(rand() * len(_PROMPTS[task]))].format(s=subject)
        if rand() < 0.3:
            prompt = f"Human: Hi, can I ask you something?\n\nAssistant: Of course, go ahead.\n\nHuman: {question}"
        else:
            prompt = question
        opener = _OPENERS[task][int(rand() * len(_OPENERS[task]))].format(s=subject)
        start = int(rand() * len(body))
        sents = [body[(start + i) % len(body)] for i in range(len(body))]
        responses = [" ".join([opener, *sents[:4]]), " ".join([opener, *sents[:2]]), " ".join(sents[:1])]
        responses = (responses + rng.sample(_RANK_FILLERS, len(_RANK_FILLERS)))[:k]
        rewards = sorted((round(rng.gauss(0.0, 1.0), 4) for _ in range(k)), reverse=True)
        for i in range(1, k):
            if rewards[i] >= rewards[i - 1]:
                rewards[i] = round(rewards[i - 1] - 0.01, 4)
        yield {"prompt": prompt, "responses": responses, "rewards": rewards}

"""Tokenizing a rendered prompt the way its tokenizer expects: BOS where the tokenizer's own
convention adds one and the text does not already carry it.

Rendered prompts are text: chat templates and the `alignx` templates may already write the BOS
token (Llama-3's `<|begin_of_text|>`) as text, others (ChatML, `plain`) write none. Tokenizing
with ``add_special_tokens=True`` would double the first kind; ``False`` drops BOS from the second
kind under a Llama-style tokenizer that adds it by default. `prompt_ids` adds exactly one BOS when
the tokenizer adds one by default, and never a second one. EOS and other trailing specials a
tokenizer may add are never added to a prompt (a prompt continues into its response).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

# How a measure tokenizes text: ours (BOS per the tokenizer, no cuts) or ScalingAlignment's.
Convention = Literal["personalign", "scaling-alignment"]
CONVENTIONS: tuple[str, ...] = get_args(Convention)


def bos_to_add(tokenizer: Any) -> int | None:
    """The BOS id when `tokenizer` adds BOS by default (``add_special_tokens=True``), else None."""
    cached = getattr(tokenizer, "_personalign_bos", False)
    if cached is not False:
        return cached
    bos = getattr(tokenizer, "bos_token_id", None)
    bos_id = None
    if bos is not None:
        with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
        without = tokenizer("a", add_special_tokens=False)["input_ids"]
        if with_special[:1] == [bos] and without[:1] != [bos]:
            bos_id = bos
    try:
        tokenizer._personalign_bos = bos_id
    except AttributeError:
        pass
    return bos_id


def with_bos(tokenizer: Any, ids: list[int]) -> list[int]:
    """`ids` with the tokenizer's BOS in front when its convention adds one and `ids` lacks it."""
    bos = bos_to_add(tokenizer)
    return [bos, *ids] if bos is not None and ids[:1] != [bos] else ids


_RECENT = 16  # texts remembered per tokenizer: a view measures a prompt and its responses, then they are tokenized


def text_ids(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text without special tokens, in one tokenizer call for those not seen lately.

    The last few texts' ids are remembered on the tokenizer, so a prompt and responses a view has just
    measured against its token budget are not tokenized a second time."""
    recent = getattr(tokenizer, "_personalign_recent", None)
    if recent is None:
        recent = {}
        try:
            tokenizer._personalign_recent = recent
        except AttributeError:
            pass
    unique = list(dict.fromkeys(texts))
    known = {t: ids for t in unique if (ids := recent.get(t)) is not None}
    missing = [t for t in unique if t not in known]
    if missing:
        known |= dict(zip(missing, tokenizer(missing, add_special_tokens=False)["input_ids"]))
        for text in missing:
            while len(recent) >= _RECENT:
                try:
                    del recent[next(iter(recent))]
                except (KeyError, RuntimeError, StopIteration):  # another thread changed it first
                    break
            recent[text] = known[text]
    return [list(known[t]) for t in texts]


def prompt_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a rendered prompt, BOS added per the tokenizer's convention (never twice); a text
    tokenized lately is not tokenized again (`text_ids`)."""
    return with_bos(tokenizer, text_ids(tokenizer, [text])[0])


def prompts_ids(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """`prompt_ids` for many texts in one tokenizer call."""
    if not texts:
        return []
    return [with_bos(tokenizer, ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


@dataclass(frozen=True, slots=True)
class Tokenized:
    """Token ids of one prompt and its responses (each response ends with EOS unless cut)."""

    prompt_ids: list[int]
    response_ids: list[list[int]]
    prompt_cut: int = 0
    response_cut: int = 0

    @property
    def truncated(self) -> bool:
        return bool(self.prompt_cut or self.response_cut)

    @property
    def packed_length(self) -> int:
        return len(self.prompt_ids) + sum(len(r) for r in self.response_ids)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def tokenize_pair(
    tokenizer: Any, prompt: str, responses: Sequence[str], max_length: int | None = None, *,
    max_prompt_tokens: int | None = None, joiner: str | None = None, eos: bool = True,
) -> Tokenized:
    """Tokenize a rendered prompt and its responses: the prompt with BOS where the tokenizer's
    convention adds one (`prompt_ids`), responses without special tokens, EOS appended to each.

    When prompt + longest response exceeds `max_length`, the prompt is left-truncated first
    (down to `max_length - longest`, but never below half of `max_length`), then responses are
    right-truncated to fit; the cuts are recorded, nothing is dropped. `max_prompt_tokens` first keeps
    only the prompt's last N tokens (BOS aside, kept): AlignX's evaluation truncates its prompts so.
    With a `joiner` (a template's `response_convention`), each response is tokenized together with
    the prompt (prompt + joiner + response) and its ids are those after the prompt's common prefix, as
    TRL's DPO trainer splits them; `eos=False` appends no EOS.
    """
    if not responses:
        raise ValueError("an example needs at least one response")
    eos_id = tokenizer.eos_token_id
    if eos and eos_id is None:
        raise ValueError("the tokenizer has no EOS token; responses must end with one")
    head = prompt_ids(tokenizer, prompt)
    if not head:
        raise ValueError("the prompt is empty; at least one prompt token is needed to score a response")
    end = [eos_id] if eos else []
    if joiner is None:
        response_ids = [ids + end for ids in text_ids(tokenizer, responses)]
    else:
        joint = [with_bos(tokenizer, ids) for ids in
                 tokenizer([prompt + joiner + r for r in responses], add_special_tokens=False)["input_ids"]]
        shared = min(_common_prefix(head, ids) for ids in joint)
        head = head[:shared]
        response_ids = [ids[shared:] + end for ids in joint]
        if not head or not all(response_ids):
            raise ValueError("a response joined to its prompt left no token of its own or of the prompt")
    left_cut = 0
    if max_prompt_tokens is not None:
        bos = 1 if head[0] == tokenizer.bos_token_id else 0
        left_cut = max(0, len(head) - bos - max_prompt_tokens)
        head = head[:bos] + head[bos + left_cut:]
    longest = max(len(r) for r in response_ids)
    if max_length is None or len(head) + longest <= max_length:
        return Tokenized(head, response_ids, left_cut)
    if max_length < 2:
        raise ValueError("max_length must be at least 2")
    keep = max(max_length - longest, min(len(head), max_length // 2))
    prompt_cut = len(head) - keep
    head = head[prompt_cut:]
    budget = max_length - len(head)
    response_cut = sum(max(0, len(r) - budget) for r in response_ids)
    return Tokenized(head, [r[:budget] for r in response_ids], left_cut + prompt_cut, response_cut)

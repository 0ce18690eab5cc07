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


def prompt_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a rendered prompt, BOS added per the tokenizer's convention (never twice)."""
    return with_bos(tokenizer, tokenizer(text, add_special_tokens=False)["input_ids"])


def prompts_ids(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """`prompt_ids` for many texts in one tokenizer call."""
    if not texts:
        return []
    return [with_bos(tokenizer, ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

"""Other preference formats -> the AlignX record form, before validation (docs/formats.md §1).

Recognised per record, so one file may mix them:

* TRL standard: ``prompt``/``chosen``/``rejected`` strings (already the AlignX form).
* TRL conversational: ``prompt`` a list of ``{"role", "content"}`` messages, ``chosen``/``rejected``
  (or ranking ``responses``) lists holding one assistant message. A one-message prompt becomes its
  text; a multi-turn prompt becomes an HH-RLHF dialogue (``\\n\\nHuman: …\\n\\nAssistant: …\\n\\nAssistant:``),
  which every template renders back as chat turns. A leading system message is kept as the
  record's ``system`` field (templates write their own system message).
* TRL implicit prompt: ``chosen``/``rejected`` without ``prompt``; the shared start is the prompt.
  Message lists split at the first differing message. HH-RLHF dialogue strings (raw HH-RLHF) split
  before the last ``Assistant:`` reply, which must be the only difference; TRL's rule (the
  longest common character prefix) would cut inside replies that start alike. Other strings use
  TRL's rule.
* TRL unpaired preference (KTO): ``prompt``, one ``completion`` (a string or one assistant message)
  and a boolean ``label`` (desirable or not); read as a one-response record with reward 1 or 0.
* ScalingAlignment ranking: ``prefix`` (per response, a list of pieces with ``<|prompter|>`` and
  ``<|assistant|>`` markers), ``suffix`` (responses), ``reward``; ``sft_index`` is kept as a field.

`columns` renames fields first ({name in the file: record key}), as `datasets`' ``rename_columns``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from personalign.records.dialogue import LEAD, SPEAKERS, looks_like_dialogue
from personalign.records.errors import RecordError

SYSTEM_FIELD = "system"
_PROMPTER, _ASSISTANT = "<|prompter|>", "<|assistant|>"
_REPLY = "\n\nAssistant:"


class _Where:
    __slots__ = ("file", "line")

    def __init__(self, file: str, line: int | None):
        self.file, self.line = file, line

    def error(self, field: str | None, message: str) -> RecordError:
        return RecordError(self.file, self.line, field, message)


def needs_normalizing(raw: dict) -> bool:
    """Cheap test: True unless the record is already in the AlignX form."""
    prompt = raw.get("prompt")
    return (type(prompt) is not str or type(raw.get("chosen")) is list or type(raw.get("rejected")) is list
            or type(raw.get("completion")) is list
            or type(raw.get("responses")) is list and any(type(r) is list for r in raw["responses"])
            ) and (prompt is not None or "chosen" in raw or "prefix" in raw or "suffix" in raw)


def rename_columns(raw: dict, columns: Mapping[str, str], *, file: str, line: int | None) -> dict:
    """`raw` with the keys of `columns` renamed to their values."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        new = columns.get(key, key)
        if new in out and out[new] is not None and value is not None:
            raise RecordError(file, line, key, f"renamed to '{new}' by the columns mapping, but the record "
                              f"already has a '{new}' field")
        if value is not None or new not in out:
            out[new] = value
    return out


def normalize_record(raw: dict, *, file: str, line: int | None, columns: Mapping[str, str] | None = None) -> dict:
    """`raw` in the AlignX record form (a new dict when anything changed); see the module docstring."""
    if columns:
        raw = rename_columns(raw, columns, file=file, line=line)
    if not needs_normalizing(raw):
        return raw
    at = _Where(file, line)
    rec = dict(raw)
    if rec.get("prompt") is None and ("prefix" in rec or "suffix" in rec):
        return _scaling_alignment(at, rec)
    if rec.get("prompt") is None:
        _split_implicit(at, rec)
    elif type(rec["prompt"]) is list:
        _set_prompt(at, rec, _messages(at, rec["prompt"], "prompt"))
    for key in ("chosen", "rejected", "completion"):
        if type(rec.get(key)) is list:
            rec[key] = _completion(at, rec[key], key)
    if type(rec.get("responses")) is list:
        rec["responses"] = [_completion(at, r, f"responses[{i}]") if type(r) is list else r
                            for i, r in enumerate(rec["responses"])]
    return rec


def _messages(at: _Where, value: list, field: str) -> list[dict[str, str]]:
    for i, m in enumerate(value):
        if not isinstance(m, dict) or type(m.get("role")) is not str or type(m.get("content")) is not str:
            raise at.error(f"{field}[{i}]", "expected a message {\"role\": ..., \"content\": \"...\"}")
        if m["role"] not in ("system", "user", "assistant"):
            raise at.error(f"{field}[{i}].role", f"expected 'system', 'user' or 'assistant', got {m['role']!r}")
    return value


def _set_prompt(at: _Where, rec: dict, messages: list[dict[str, str]], field: str = "prompt") -> None:
    """The prompt text of a conversation (see the module docstring); a system message goes to `system`."""
    if messages and messages[0]["role"] == "system":
        rec[SYSTEM_FIELD] = messages[0]["content"]
        messages = messages[1:]
    if not messages or messages[-1]["role"] != "user":
        raise at.error(field, "expected a conversation that ends with a user message")
    for i, m in enumerate(messages):
        if m["role"] == "system":
            raise at.error(f"{field}[{i}].role", "a system message may only come first")
        if not m["content"].strip():
            raise at.error(f"{field}[{i}].content", "expected a non-empty message")
    rec["prompt"] = messages_prompt(messages)


def messages_prompt(messages: list[dict[str, str]]) -> str:
    """The prompt text of user/assistant turns ending with a user message: one message's text, or an
    HH-RLHF dialogue that every template renders back as chat turns."""
    if len(messages) == 1:
        return messages[0]["content"]
    turns = [f"{SPEAKERS[m['role']]}: {m['content']}" for m in messages]
    return LEAD + LEAD.join(turns) + _REPLY


def _completion(at: _Where, value: list, field: str) -> str:
    _messages(at, value, field)
    if len(value) != 1 or value[0]["role"] != "assistant":
        raise at.error(field, f"expected one assistant message, got {len(value)} message(s)"
                       + ("" if len(value) != 1 else f" with role {value[0]['role']!r}"))
    return value[0]["content"]


def _split_implicit(at: _Where, rec: dict) -> None:
    chosen, rejected = rec.get("chosen"), rec.get("rejected")
    if type(chosen) is list and type(rejected) is list:
        _messages(at, chosen, "chosen")
        _messages(at, rejected, "rejected")
        n = 0
        while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
            n += 1
        if n == 0:
            raise at.error("prompt", "required key is missing, and chosen and rejected share no first message "
                           "to take as the prompt")
        _set_prompt(at, rec, chosen[:n], "chosen")
        rec["chosen"], rec["rejected"] = chosen[n:], rejected[n:]
        return
    if type(chosen) is not str or type(rejected) is not str:
        return  # validation names the missing or mistyped field
    if looks_like_dialogue(chosen) and looks_like_dialogue(rejected):
        cut_c, cut_r = chosen.rfind(_REPLY), rejected.rfind(_REPLY)
        if chosen[:cut_c] != rejected[:cut_r]:
            raise at.error("rejected", "an HH-RLHF dialogue whose turns before the last 'Assistant:' reply differ "
                           "from chosen's; only the last reply may differ")
        rec["prompt"] = chosen[:cut_c + len(_REPLY)]
        rec["chosen"] = _reply(chosen[cut_c + len(_REPLY):])
        rec["rejected"] = _reply(rejected[cut_r + len(_REPLY):])
        return
    idx = 0
    limit = min(len(chosen), len(rejected))
    while idx < limit and chosen[idx] == rejected[idx]:
        idx += 1
    if idx and idx < limit and chosen[idx - 1] == " ":
        idx -= 1
    if not chosen[:idx].strip():
        raise at.error("prompt", "required key is missing, and chosen and rejected share no start to take as "
                       "the prompt")
    rec["prompt"], rec["chosen"], rec["rejected"] = chosen[:idx], chosen[idx:], rejected[idx:]


def _reply(text: str) -> str:
    return text[1:] if text.startswith(" ") else text


def _scaling_alignment(at: _Where, rec: dict) -> dict:
    prefixes, suffixes = rec.pop("prefix", None), rec.pop("suffix", None)
    if type(prefixes) is not list or not prefixes:
        raise at.error("prefix", "expected a list with one prefix (a list of strings) per response")
    if type(suffixes) is not list or len(suffixes) != len(prefixes):
        got = len(suffixes) if type(suffixes) is list else "no list"
        raise at.error("suffix", f"expected a list of {len(prefixes)} responses (one per prefix), got {got}")
    texts = []
    for i, p in enumerate(prefixes):
        pieces = [p] if type(p) is str else p
        if type(pieces) is not list or not all(type(s) is str for s in pieces):
            raise at.error(f"prefix[{i}]", "expected a list of strings")
        texts.append("".join(pieces).replace(_PROMPTER, "\n\nHuman: ").replace(_ASSISTANT, "\n\nAssistant: ").rstrip())
    for i, t in enumerate(texts[1:], 1):
        if t != texts[0]:
            raise at.error(f"prefix[{i}]", "differs from prefix[0]; a ranking's responses must share one prompt")
    rec["prompt"], rec["responses"] = texts[0], suffixes
    if "reward" in rec:
        rec["rewards"] = rec.pop("reward")
    return rec

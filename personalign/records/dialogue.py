"""HH-RLHF dialogue prompts ("\\n\\nHuman: …\\n\\nAssistant: …") as chat turns, and back.

Well-formed text: an optional leading "\\n\\n" (HH-RLHF files have it), then turns joined by
"\\n\\n", each "Human: <text>" or "Assistant: <text>" with non-empty text, optionally ending in a
bare "\\n\\nAssistant:" that opens the reply to be written. Turns are
{"role": "user" | "assistant", "content": text}; the open reply is a final assistant turn with
empty content. For well-formed text `render_dialogue(parse_dialogue(text)) == text`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

LEAD = "\n\n"
ROLES = {"Human": "user", "Assistant": "assistant"}
SPEAKERS = {role: speaker for speaker, role in ROLES.items()}
_TURN_START = re.compile(r"\n\n(?=(?:Human|Assistant):)")


class DialogueError(ValueError):
    """Text that is not a well-formed HH-RLHF dialogue; `position` is the 0-based character offset."""

    def __init__(self, position: int, message: str):
        super().__init__(f"not a well-formed Human/Assistant dialogue at character {position}: {message}")
        self.position = position


@dataclass(slots=True)
class Dialogue:
    """Chat turns of a dialogue prompt; `lead` is the text before the first turn ("\\n\\n" or "")."""

    turns: list[dict[str, str]] = field(default_factory=list)
    lead: str = ""

    @property
    def is_open(self) -> bool:
        """True when the text ends in a bare "Assistant:" (the reply to write)."""
        return bool(self.turns) and self.turns[-1] == {"role": "assistant", "content": ""}

    @property
    def history(self) -> list[dict[str, str]]:
        """The turns without the open reply."""
        return self.turns[:-1] if self.is_open else list(self.turns)


def looks_like_dialogue(text: str) -> bool:
    """Cheap test: starts (after an optional "\\n\\n") with "Human:" and has an "Assistant:" turn."""
    return text.removeprefix(LEAD).startswith("Human:") and "\n\nAssistant:" in text


def parse_dialogue(text: str) -> Dialogue:
    """Split a Human/Assistant dialogue into chat turns; raises `DialogueError` naming the position."""
    lead = LEAD if text.startswith(LEAD) else ""
    pos = len(lead)
    pieces = _TURN_START.split(text[pos:])
    turns = []
    for n, piece in enumerate(pieces):
        speaker, colon, rest = piece.partition(":")
        if not colon or speaker not in ROLES:
            raise DialogueError(pos, f"expected 'Human: ' or 'Assistant: ', got {piece[:20]!r}")
        last = n == len(pieces) - 1
        if rest == "" and last and speaker == "Assistant" and turns:
            turns.append({"role": "assistant", "content": ""})
        elif not rest.startswith(" ") or rest == " ":
            what = "a space and text" if rest.startswith(" ") or rest == "" else "a space"
            raise DialogueError(pos + len(speaker) + 1, f"expected {what} after '{speaker}:'"
                                + (" (only the final turn may be a bare 'Assistant:')" if rest == "" else ""))
        else:
            turns.append({"role": ROLES[speaker], "content": rest[1:]})
        pos += len(piece) + len(LEAD)
    return Dialogue(turns, lead)


def render_dialogue(dialogue: Dialogue) -> str:
    """The inverse of `parse_dialogue`."""
    parts = []
    for n, turn in enumerate(dialogue.turns, 1):
        speaker = SPEAKERS.get(turn["role"])
        if speaker is None:
            raise ValueError(f"turn {n}: unknown role {turn['role']!r}; expected 'user' or 'assistant'")
        if not turn["content"] and (speaker == "Human" or n < len(dialogue.turns)):
            raise ValueError(f"turn {n}: empty content (only a final assistant turn, the open reply, may be empty)")
        parts.append(f"{speaker}: {turn['content']}" if turn["content"] else f"{speaker}:")
    return dialogue.lead + LEAD.join(parts)


def dialogue_messages(text: str) -> list[dict[str, str]] | None:
    """The chat turns of a well-formed dialogue prompt whose last turn (before any open reply) is
    the user's; None for any other text (it is then one user message as it stands)."""
    if not looks_like_dialogue(text):
        return None
    try:
        turns = parse_dialogue(text).history
    except DialogueError:
        return None
    return turns if turns and turns[-1]["role"] == "user" else None

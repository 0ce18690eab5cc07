"""Chat prompts for persona inference and the persona judges: instructions and few-shot turns (built
from the worked examples every judge shares, `personalign.llm.judging.SHOTS`).

Each builder returns chat messages (system, few-shot user/assistant turns, the query). The
`*_VERSION` strings enter the generation-cache keys: bump one whenever its prompt changes.
"""
from __future__ import annotations

from personalign.llm.base import Message
from personalign.llm.judging import SHOTS
from personalign.llm.prompt_file import PromptFile

INFER_VERSION = "persona-infer-v1"
ACCURACY_VERSION = "persona-accuracy-v1"
PREFER_VERSION = "persona-prefer-v1"
# Slots a user's prompt file (`--prompt-file`, `personalign.llm.prompt_file`) may fill, per task.
INFER_SLOTS = frozenset({"prompt", "preferred", "other"})
ACCURACY_SLOTS = frozenset({"persona", "prompt", "first", "second"})
PREFER_SLOTS = frozenset({"prompt", "first", "second"})


INFER_SYSTEM = (
    "You describe users from their choices. You will see a prompt and two responses to it. A user read "
    "both and preferred the first one (Preferred Response) over the second (Other Response). Write ONE "
    "short sentence that starts with \"The user\" and describes who this user is: the needs, goals, "
    "values or traits that explain the choice. Describe the person at a higher level; do not copy "
    "words or details from the responses. Reply with that sentence only."
)

ACCURACY_SYSTEM = (
    "You predict user choices. You will see a short description of a user (Persona), a prompt, and "
    "two responses to it (Response 1 and Response 2). Decide which response this user would choose. "
    "Reply with the number only: 1 or 2."
)

PREFER_SYSTEM = (
    "You compare users' needs. You will see a prompt and short descriptions of two users who asked it "
    "(Persona 1 and Persona 2). Decide which persona describes needs that are more reasonable and "
    "desirable for a helpful assistant to serve when answering this prompt. Reply with the number only: "
    "1 or 2."
)


def _infer_query(prompt: str, preferred: str, other: str) -> str:
    return f"Prompt: {prompt}\n\nPreferred Response: {preferred}\n\nOther Response: {other}"


def _accuracy_query(persona: str, prompt: str, first: str, second: str) -> str:
    return (f"Persona: {persona}\n\nPrompt: {prompt}\n\nResponse 1: {first}\n\nResponse 2: {second}\n\n"
            "Which response would this user choose? Reply 1 or 2.")


def _prefer_query(prompt: str, first: str, second: str) -> str:
    return (f"Prompt: {prompt}\n\nPersona 1: {first}\n\nPersona 2: {second}\n\n"
            "Which persona describes more reasonable, desirable needs? Reply 1 or 2.")


def _chat(system: str, shots: list[tuple[str, str]], query: str) -> list[Message]:
    messages: list[Message] = [{"role": "system", "content": system}]
    for user, assistant in shots:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    messages.append({"role": "user", "content": query})
    return messages


def infer_messages(prompt: str, preferred: str, other: str, prompt_file: PromptFile | None = None) -> list[Message]:
    """Ask for the persona of a user who prefers `preferred` over `other`."""
    if prompt_file is not None:
        return prompt_file.messages(prompt=prompt, preferred=preferred, other=other)
    shots = [(_infer_query(s.prompt, s.preferred, s.other), s.persona) for s in SHOTS]
    return _chat(INFER_SYSTEM, shots, _infer_query(prompt, preferred, other))


def accuracy_messages(persona: str, prompt: str, first: str, second: str,
                      prompt_file: PromptFile | None = None) -> list[Message]:
    """Ask which of two responses the persona would choose (few-shot answers alternate 2, 1)."""
    if prompt_file is not None:
        return prompt_file.messages(persona=persona, prompt=prompt, first=first, second=second)
    a, b = SHOTS[0], SHOTS[1]
    shots = [
        (_accuracy_query(a.persona, a.prompt, a.other, a.preferred), "2"),
        (_accuracy_query(b.persona, b.prompt, b.preferred, b.other), "1"),
    ]
    return _chat(ACCURACY_SYSTEM, shots, _accuracy_query(persona, prompt, first, second))


def prefer_messages(prompt: str, first: str, second: str, prompt_file: PromptFile | None = None) -> list[Message]:
    """Ask which of two personas describes more reasonable, desirable needs (few-shot: 1, 2)."""
    if prompt_file is not None:
        return prompt_file.messages(prompt=prompt, first=first, second=second)
    a, b = SHOTS[0], SHOTS[3]
    shots = [
        (_prefer_query(a.prompt, a.persona, a.other_persona), "1"),
        (_prefer_query(b.prompt, b.other_persona, b.persona), "2"),
    ]
    return _chat(PREFER_SYSTEM, shots, _prefer_query(prompt, first, second))

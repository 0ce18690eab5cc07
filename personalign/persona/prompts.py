"""Chat prompts for persona inference and the persona judges: instructions and few-shot examples.

Each builder returns chat messages (system, few-shot user/assistant turns, the query). The
`*_VERSION` strings enter the generation-cache keys: bump one whenever its prompt changes.
"""
from __future__ import annotations

from dataclasses import dataclass

from personalign.llm.base import Message
from personalign.llm.prompt_file import PromptFile

INFER_VERSION = "persona-infer-v1"
ACCURACY_VERSION = "persona-accuracy-v1"
PREFER_VERSION = "persona-prefer-v1"
# Slots a user's prompt file (`--prompt-file`, `personalign.llm.prompt_file`) may fill, per task.
INFER_SLOTS = frozenset({"prompt", "preferred", "other"})
ACCURACY_SLOTS = frozenset({"persona", "prompt", "first", "second"})
PREFER_SLOTS = frozenset({"prompt", "first", "second"})


def task_version(version: str, prompt_file: PromptFile | None) -> str:
    """The cache-key task name: our prompt's version, or the prompt file's content hash."""
    return version if prompt_file is None else f"{version}+{prompt_file.version}"


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

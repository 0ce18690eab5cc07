"""LLM judges of personas (docs/fidelity.md, "Persona Inference"): persona accuracy and persona preference.

*Persona accuracy*: the judge sees a persona, the prompt and both responses and names the one
the persona would choose; every persona is judged with its target response (chosen for chosen
and gold personas, rejected for rejected personas) shown first and shown second. A verdict is
correct when it names the target's position; accuracy is the mean over both orders (0.5 is
chance), unparseable verdicts count as wrong and are reported.

*Persona preference*: the judge sees the prompt and the chosen and rejected personas of a
record and names the persona whose needs are more reasonable and desirable for a helpful
assistant to serve, in both orders. The same persona picked in both orders is a win for its
side; anything else (disagreement, or an unparseable verdict) is a tie.

Verdicts are read from the judge's text (`verdict_mode="generate"`) or from the probabilities
of its answers "1" and "2", averaged over both orders (`"logprob"`, `personalign.llm.verdict`).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from pydantic import PositiveInt

from personalign.config import StrictModel
from personalign.errors import EmptyError
from personalign.files import write_json
from personalign.llm import check_backend, make_backend
from personalign.llm.base import Backend, BackendConfig, GenerationConfig
from personalign.llm.judging import JUDGE_GENERATION, agreement, run_judge
from personalign.llm.prompt_file import PromptFile, load_prompt_file, task_version
from personalign.llm.verdict import VerdictMode
from personalign.metrics import Estimate, bootstrap
from personalign.models.loading import process_state
from personalign.persona.infer import default_cache_path
from personalign.persona.prompts import ACCURACY_SLOTS, ACCURACY_VERSION, PREFER_SLOTS, PREFER_VERSION, accuracy_messages, prefer_messages
from personalign.progress import work_progress
from personalign.records.io import check_io, read_examples
from personalign.records.schema import Example

PathLike = str | os.PathLike
PersonaField = Literal["chosen_persona", "rejected_persona", "ground_truth_persona"]
PERSONA_FIELDS: tuple[str, ...] = get_args(PersonaField)  # chosen, rejected, and GOLD_PERSONA


class PersonaJudgeConfig(StrictModel):
    """`personalign persona accuracy` / `persona prefer` settings."""

    data: str
    backend: BackendConfig = BackendConfig()
    persona_field: PersonaField = "chosen_persona"  # accuracy: which persona is judged
    limit: PositiveInt | None = None
    out: str | None = None  # the result as JSON
    cache: str | None = None  # judge cache; default beside `out` (none without `out`)
    verdict_mode: VerdictMode = "generate"
    prompt_file: str | None = None

    def prompt(self, slots: frozenset[str]) -> PromptFile | None:
        """The prompt file replacing the judge prompt (filling `slots`), read and checked, or None."""
        return load_prompt_file(self.prompt_file, slots, {"first", "second"})

    def cache_path(self) -> str | os.PathLike | None:
        """The judge cache: `cache`, else `<out>.cache.jsonl`, else none."""
        return self.cache if self.cache is not None else default_cache_path(self.out) if self.out is not None else None

@dataclass(slots=True)
class PersonaAccuracy:
    """Accuracy over both orders (bootstrap over personas), per order (target response shown
    first / second), unparseable verdicts (counted wrong) and records lacking the persona."""

    persona_field: str
    judge: str
    accuracy: Estimate
    target_first: float
    target_second: float
    n_personas: int
    unparseable: int
    missing: int

    def as_dict(self) -> dict:
        return {
            "kind": "persona-accuracy",
            "persona_field": self.persona_field, "judge": self.judge, "accuracy": self.accuracy.as_dict(),
            "target_first": self.target_first, "target_second": self.target_second,
            "n_personas": self.n_personas, "unparseable": self.unparseable, "missing": self.missing,
        }


@dataclass(slots=True)
class PersonaPreference:
    """Win/tie/loss counts of the chosen persona against the rejected one."""

    judge: str
    chosen_wins: int
    ties: int
    rejected_wins: int
    unparseable: int
    missing: int

    @property
    def n(self) -> int:
        return self.chosen_wins + self.ties + self.rejected_wins

    def rates(self) -> dict[str, float]:
        n = self.n or float("nan")
        return {"chosen": self.chosen_wins / n, "tie": self.ties / n, "rejected": self.rejected_wins / n}

    def as_dict(self) -> dict:
        return {
            "kind": "persona-preference",
            "judge": self.judge, "n": self.n, "chosen_wins": self.chosen_wins, "ties": self.ties,
            "rejected_wins": self.rejected_wins, "rates": self.rates(), "unparseable": self.unparseable,
            "missing": self.missing,
        }


def persona_accuracy(
    examples: Iterable[Example],
    backend: Backend,
    *,
    persona_field: str = "chosen_persona",
    gen_config: GenerationConfig = JUDGE_GENERATION,
    cache_path: PathLike | None = None,
    chunk_size: int = 8,
    on_progress: Callable[[int], None] | None = None,
    n_boot: int = 1000,
    verdict_mode: VerdictMode = "generate",
    prompt_file: PromptFile | None = None,
) -> PersonaAccuracy:
    """Judge, for every example holding `persona_field`, which response that persona would choose."""
    if persona_field not in PERSONA_FIELDS:
        raise ValueError(f"persona_field must be one of {PERSONA_FIELDS}, got {persona_field!r}")
    requests, missing = [], 0
    for ex in examples:
        persona = ex.user.personas.get(persona_field)
        if not persona:
            missing += 1
            continue
        target, other = (ex.rejected, ex.chosen) if persona_field == "rejected_persona" else (ex.chosen, ex.rejected)
        requests.append(accuracy_messages(persona, ex.prompt, target, other, prompt_file))
        requests.append(accuracy_messages(persona, ex.prompt, other, target, prompt_file))
    _, verdicts = run_judge(backend, requests, task=task_version(ACCURACY_VERSION, prompt_file), gen_config=gen_config,
                            cache_path=cache_path, chunk_size=chunk_size, on_progress=on_progress, mode=verdict_mode)
    correct = np.array([v == (1 if i % 2 == 0 else 2) for i, v in enumerate(verdicts)], dtype=np.float64)
    first, second = correct[0::2], correct[1::2]
    return PersonaAccuracy(
        persona_field=persona_field,
        judge=backend.identity,
        accuracy=bootstrap((first + second) / 2, n_boot=n_boot),
        target_first=float(first.mean()) if first.size else float("nan"),
        target_second=float(second.mean()) if second.size else float("nan"),
        n_personas=len(first),
        unparseable=sum(v is None for v in verdicts),
        missing=missing,
    )


def persona_preference(
    examples: Iterable[Example],
    backend: Backend,
    *,
    gen_config: GenerationConfig = JUDGE_GENERATION,
    cache_path: PathLike | None = None,
    chunk_size: int = 8,
    on_progress: Callable[[int], None] | None = None,
    verdict_mode: VerdictMode = "generate",
    prompt_file: PromptFile | None = None,
) -> PersonaPreference:
    """Judge the chosen persona against the rejected persona of every example holding both."""
    requests, missing = [], 0
    for ex in examples:
        chosen, rejected = ex.user.personas.get("chosen_persona"), ex.user.personas.get("rejected_persona")
        if not chosen or not rejected:
            missing += 1
            continue
        requests.append(prefer_messages(ex.prompt, chosen, rejected, prompt_file))
        requests.append(prefer_messages(ex.prompt, rejected, chosen, prompt_file))
    _, verdicts = run_judge(backend, requests, task=task_version(PREFER_VERSION, prompt_file), gen_config=gen_config,
                            cache_path=cache_path, chunk_size=chunk_size, on_progress=on_progress, mode=verdict_mode)
    wins = {"chosen": 0, "tie": 0, "rejected": 0}
    for chosen_first, rejected_first in zip(verdicts[0::2], verdicts[1::2]):
        wins[{1: "chosen", 0: "tie", -1: "rejected"}[agreement(chosen_first, rejected_first)]] += 1
    return PersonaPreference(backend.identity, wins["chosen"], wins["tie"], wins["rejected"],
                             sum(v is None for v in verdicts), missing)


def _judged(cfg: PersonaJudgeConfig, has: Callable[[Example], bool], empty: str, **where
             ) -> tuple[list[Example], int]:
    """(examples, how many have what is judged): the config checked (records, output and cache files,
    the backend) before any model loads; an EmptyError when there are no records or none to judge."""
    check_io(cfg.data, (cfg.out, "--out"), (cfg.cache_path(), "--cache"), inputs=(cfg.prompt_file,))
    examples = list(islice(read_examples(cfg.data), cfg.limit))
    if not examples:
        raise EmptyError("no records to judge", file=cfg.data)
    n = sum(map(has, examples))
    if n == 0:
        raise EmptyError(f"{empty} (run `personalign persona infer` first)", file=cfg.data, **where)
    check_backend(cfg.backend)
    return examples, n


def _bar(progress: bool):
    return work_progress(enabled=progress and process_state().is_main_process)


def judge_persona_accuracy(cfg: PersonaJudgeConfig, *, progress: bool = True) -> PersonaAccuracy:
    """`persona accuracy`: the config checked, then `persona_accuracy` with a progress bar."""
    template, field = cfg.prompt(ACCURACY_SLOTS), cfg.persona_field
    examples, n = _judged(cfg, lambda ex: bool(ex.user.personas.get(field)), f"no record has a {field} to judge",
                          option="--persona-field")
    backend = make_backend(cfg.backend)
    with _bar(progress) as bar:
        task = bar.add_task("judging", total=2 * n)
        return persona_accuracy(examples, backend, persona_field=field, cache_path=cfg.cache_path(),
                                chunk_size=cfg.backend.requests_per_write, on_progress=lambda k: bar.advance(task, k),
                                verdict_mode=cfg.verdict_mode, prompt_file=template)


def judge_persona_preference(cfg: PersonaJudgeConfig, *, progress: bool = True) -> PersonaPreference:
    """`persona prefer`: the config checked, then `persona_preference` with a progress bar."""
    template = cfg.prompt(PREFER_SLOTS)
    examples, n = _judged(cfg, lambda ex: bool(ex.user.personas.get("chosen_persona")
                                               and ex.user.personas.get("rejected_persona")),
                          "no record has both a chosen_persona and a rejected_persona to compare")
    backend = make_backend(cfg.backend)
    with _bar(progress) as bar:
        task = bar.add_task("judging", total=2 * n)
        return persona_preference(examples, backend, cache_path=cfg.cache_path(),
                                  chunk_size=cfg.backend.requests_per_write, on_progress=lambda k: bar.advance(task, k),
                                  verdict_mode=cfg.verdict_mode, prompt_file=template)


def write_persona_result(path: str | os.PathLike, result: PersonaAccuracy | PersonaPreference) -> Path:
    """Write a persona judge's result as JSON (atomically)."""
    return write_json(path, result.as_dict())

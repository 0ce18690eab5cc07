"""Persona inference (docs/fidelity.md, "Persona Inference"): an LLM abductively describes the user behind each choice.

The chosen persona explains preferring `chosen` over `rejected`; the rejected persona is the
same request with the two responses swapped. Raw generations go to a crash-safe cache, so a
killed run resumes where it stopped; the output dataset is written once, atomically, at the end.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, PositiveInt

from personalign.config import StrictModel
from personalign.llm import check_backend, make_backend
from personalign.llm.base import Backend, BackendConfig, GenerationConfig
from personalign.llm.cache import generate_cached, open_cache
from personalign.llm.prompt_file import PromptFile, load_prompt_file, task_version
from personalign.models.loading import process_state
from personalign.persona.prompts import INFER_SLOTS, INFER_VERSION, infer_messages
from personalign.progress import work_progress
from personalign.records.io import Source, check_io, iter_raw, read_examples, record_writer, write_examples
from personalign.records.schema import Example

Side = Literal["chosen", "rejected"]
SIDES: tuple[str, ...] = get_args(Side)
FIELD = {"chosen": "chosen_persona", "rejected": "rejected_persona"}
DEFAULT_GENERATION = GenerationConfig(max_new_tokens=64, temperature=0.0)


class InferConfig(StrictModel):
    """`personalign persona infer` settings."""

    data: str
    out: str  # records with chosen_persona / rejected_persona (.jsonl/.json/.parquet)
    backend: BackendConfig = BackendConfig()
    sides: list[Side] = Field(default_factory=lambda: list(SIDES), min_length=1)
    limit: PositiveInt | None = None
    max_new_tokens: PositiveInt = DEFAULT_GENERATION.max_new_tokens
    cache: str | None = None  # default: <out>.cache.jsonl
    prompt_file: str | None = None

    def cache_path(self) -> str | os.PathLike:
        return self.cache if self.cache is not None else default_cache_path(self.out)

    def prompt(self) -> PromptFile | None:
        """The prompt file replacing the inference prompt, read and checked, or None."""
        return load_prompt_file(self.prompt_file, INFER_SLOTS, {"preferred", "other"})

    def generation(self) -> GenerationConfig:
        return DEFAULT_GENERATION.model_copy(update={"max_new_tokens": self.max_new_tokens})

_BULLET = re.compile(r"^\s*(?:[-*•>#]+|\d+[.)])\s+")
_LABEL = re.compile(r"^\s*(?:\*\*)?\s*(?:inferred\s+)?persona(?:\s*\d+)?\s*(?:\*\*)?\s*[:\-–—]\s*(?:\*\*)?\s*",
                    re.I)
_QUOTES = "\"'“”‘’`*_ "
_USER = re.compile(r"^(?:(?:the|this|a|that)\s+)?user(?![\w-])", re.I)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


@dataclass(slots=True)
class Parsed:
    """A cleaned persona sentence ("" when the output held no text) and whether "The user" had
    to be added or restored."""

    persona: str
    repaired: bool


def parse_persona(output: str) -> Parsed:
    """First non-empty line, without bullets, "Persona:" labels and quotes, cut to its first
    sentence and made to start with "The user" (added, or restored from "User ..."/"A user ...")."""
    line = next((ln for ln in output.splitlines() if ln.strip(_QUOTES + "\t-")), "")
    text = _LABEL.sub("", _BULLET.sub("", line.strip())).strip(_QUOTES + "\t")
    text = _SENTENCE_END.split(text, maxsplit=1)[0].strip(_QUOTES + "\t")
    m = _USER.match(text)
    if m:
        rest = text[m.end():]
        if rest[:1] in (":", ",", ";"):
            rest = " " + rest[1:].lstrip()
        persona, repaired = "The user" + rest, text[:m.end()] != "The user" or rest != text[m.end():]
    else:
        if text[:1].isupper() and text[1:2].islower():
            text = text[0].lower() + text[1:]
        persona, repaired = f"The user {text}", True
    if not persona[len("The user"):].strip(" .!?,;:"):
        return Parsed("", False)
    return Parsed(persona, repaired)


@dataclass(slots=True)
class InferStats:
    """What a run did: records written, personas set, persona requests generated now vs. reused
    (from the cache, or identical to another record's request), personas that needed "The user"
    added, outputs without any text (left unset), personas that overwrote one the record already
    had, and what opening the cache dropped (a torn last line, unreadable lines)."""

    records: int = 0
    personas: int = 0
    generated: int = 0
    reused: int = 0
    repaired: int = 0
    empty: int = 0
    replaced: int = 0
    cache_skipped_lines: int = 0
    cache_truncated_bytes: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def default_cache_path(out_path: str | os.PathLike) -> Path:
    """`<out>.cache.jsonl` beside the output."""
    out = Path(out_path)
    return out.with_name(out.name + ".cache.jsonl")


def _chunks(examples: Iterator[Example], size: int) -> Iterator[list[Example]]:
    chunk: list[Example] = []
    for ex in examples:
        chunk.append(ex)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def infer_personas(
    source: Source,
    backend: Backend,
    out_path: str | os.PathLike,
    *,
    sides: tuple[str, ...] = SIDES,
    cache_path: str | os.PathLike | None = None,
    limit: int | None = None,
    gen_config: GenerationConfig = DEFAULT_GENERATION,
    chunk_size: int = 8,
    on_progress: Callable[[int], None] | None = None,
    prompt_file: PromptFile | None = None,
) -> InferStats:
    """Add `chosen_persona` / `rejected_persona` to every record of `source` and write `out_path`
    (.jsonl, .json or .parquet; all other keys kept).

    Generations are cached in `cache_path` (default `<out>.cache.jsonl`) `chunk_size` at a time;
    rerunning after a kill regenerates only what was not stored. Under `accelerate launch` each
    chunk's requests are shared out over the processes (see `open_cache`); the main process writes. `on_progress(n)` reports n
    more persona requests done.
    """
    unknown = set(sides) - set(SIDES)
    if unknown or not sides:
        raise ValueError(f"sides must be a non-empty subset of {SIDES}, got {sides!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    stats = InferStats()
    state = process_state()
    cache = open_cache(cache_path if cache_path is not None else default_cache_path(out_path), state)
    stats.cache_skipped_lines, stats.cache_truncated_bytes = cache.skipped_lines, cache.truncated_bytes

    def examples() -> Iterator[Example]:
        source_examples = read_examples(source)
        if limit is not None:
            source_examples = (ex for i, ex in zip(range(limit), source_examples))
        for chunk in _chunks(source_examples, max(1, 4 * chunk_size)):
            requests = [
                infer_messages(ex.prompt, *((ex.chosen, ex.rejected) if side == "chosen" else (ex.rejected, ex.chosen)),
                               prompt_file)
                for ex in chunk for side in sides
            ]
            result = generate_cached(backend, requests, gen_config, task=task_version(INFER_VERSION, prompt_file),
                                     cache=cache, chunk_size=chunk_size, on_progress=on_progress, state=state)
            stats.generated += result.generated
            stats.reused += result.reused
            outputs = iter(result.outputs)
            for ex in chunk:
                for side in sides:
                    parsed = parse_persona(next(outputs))
                    field = FIELD[side]
                    if not parsed.persona:
                        stats.empty += 1
                        ex.user.personas.pop(field, None)
                        continue
                    stats.replaced += field in ex.user.personas
                    ex.user.personas[field] = parsed.persona
                    stats.personas += 1
                    stats.repaired += parsed.repaired
                stats.records += 1
                yield ex

    with cache:
        if state.is_main_process:
            write_examples(examples(), out_path)
        else:  # the other processes generate their share of every chunk; the main process writes
            for _ in examples():
                pass
    return stats


def run_infer(cfg: InferConfig, *, progress: bool = True) -> InferStats:
    """`persona infer`: the config checked (records, the output and cache files, the prompt file, the
    backend) before any model loads, then `infer_personas` with a progress bar."""
    template = cfg.prompt()
    check_io(cfg.data, (cfg.out, "--out"), (cfg.cache_path(), "--cache"), inputs=(cfg.prompt_file,))
    record_writer(cfg.out, option="--out")
    check_backend(cfg.backend)
    total = sum(1 for _ in islice(iter_raw(cfg.data), cfg.limit)) * len(cfg.sides)
    backend = make_backend(cfg.backend)
    with work_progress(enabled=progress and process_state().is_main_process) as bar:
        task = bar.add_task("inferring personas", total=total)
        return infer_personas(cfg.data, backend, cfg.out, sides=tuple(cfg.sides), cache_path=cfg.cache_path(),
                              limit=cfg.limit, gen_config=cfg.generation(), chunk_size=cfg.backend.requests_per_write,
                              on_progress=lambda n: bar.advance(task, n), prompt_file=template)


def persona_of(backend: Backend, prompt: str, preferred: str, other: str, *,
               gen_config: GenerationConfig = DEFAULT_GENERATION) -> str | None:
    """One persona, inferred from one preference (the preferred response over the other) with the
    same prompt and parsing as `infer_personas`; None when the output holds none."""
    (output,) = backend.generate([infer_messages(prompt, preferred, other)], gen_config, progress=False)
    return parse_persona(output).persona or None

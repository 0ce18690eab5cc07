"""Generation (docs/formats.md, "Evaluation run files"): one response per record under a view, from any backend, resumable.

A run directory holds `generations.jsonl` (one row per record, in record order),
`generation.json` (data, view, backend and sampling settings, counts, timing; the backend's API
key is never part of it — only the *name* of its environment variable) and
`generations.cache.jsonl`, the append-only cache that lets a killed run continue where it
stopped: rerunning the same command generates only what the cache does not hold.

The prompt is the view's rendered prompt. A backend that carries a tokenizer (the local one)
gets that text; any other backend (an OpenAI-compatible server) gets the `chat` template's
messages, or the rendered text as is for the other templates.
"""
from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from personalign.config import StrictModel
from personalign.errors import CorruptFileError, EmptyError, UserError
from personalign.files import check_output_dir, write_json
from personalign.llm import check_backend, make_backend
from personalign.llm.base import Backend, BackendConfig, GenerationConfig
from personalign.llm.cache import generate_cached, open_cache
from personalign.models.card import with_trained_view
from personalign.models.loading import check_model_dir, process_state
from personalign.records.errors import RecordError
from personalign.records.io import OnInvalid, check_source, read_examples, write_jsonl
from personalign.views.build import REJECTED_SIDE, ViewConfig, build_view, preferred_order
from personalign.views.templates import plain_shot

GENERATIONS_FILE = "generations.jsonl"
SETTINGS_FILE = "generation.json"
CACHE_FILE = "generations.cache.jsonl"
# what `eval generate` writes into its run directory (a killed `accelerate launch` leaves per-rank cache shards)
GENERATE_OUTPUTS = (GENERATIONS_FILE, SETTINGS_FILE, CACHE_FILE, f"{CACHE_FILE}.rank*")
TASK = "eval-generate-v1"


class GenerateConfig(StrictModel):
    """`personalign eval generate` settings."""

    data: str
    columns: dict[str, str] | None = None  # field renames applied when reading, {name in the data: record key}
    out: str
    view: ViewConfig = ViewConfig()
    backend: BackendConfig = BackendConfig()
    generation: GenerationConfig = GenerationConfig()
    limit: int | None = Field(None, gt=0)
    on_invalid: OnInvalid = "fail"
    chunk_size: int | None = Field(None, gt=0)  # requests per cache write; default: BackendConfig.requests_per_write
    # Few-shot persona tailoring (the persona-tailoring seed's few-shot model): exemplars from
    # `shots_from`, each a prompt, a persona and the response that persona prefers, written before
    # every prompt in the `plain` layout; generation stops at the next "\nPrompt:". As the seed runs it
    # (`few_shot` 0): every record, the side set by the training type `shots_type`; ours (`few_shot`
    # k > 0): k drawn (seeded), the side of the view's persona.
    few_shot: int = Field(0, ge=0)
    shots_from: str | None = None
    shots_type: Literal["chosen", "rejected", "all"] = "chosen"
    shots_seed: int = 0
    # Personalized best-of-n: best_of samples per record (seeds generation.seed + k), the one the reward
    # model rewards most under its own view of the record (default: the view it was trained with) kept.
    best_of: int = Field(1, ge=1, le=64)
    reward_model: str | None = None
    reward_view: ViewConfig | None = None

    @model_validator(mode="after")
    def _few_shot(self) -> GenerateConfig:
        if (self.few_shot or self.shots_from) and (self.view.view != "persona" or self.view.template != "plain"
                                                   or not self.shots_from):
            raise ValueError("few_shot / shots_from (few-shot tailoring) need view 'persona', template 'plain' and "
                             "shots_from (a training file)")
        if self.best_of > 1 and (self.reward_model is None or self.generation.temperature == 0):
            raise ValueError("best_of > 1 needs reward_model and sampling (generation.temperature > 0): greedy "
                             "decoding gives the same response every time")
        return self


FEW_SHOT_STOP = "\nPrompt:"


def few_shot_prefix(source: str, k: int, persona_source: str, seed: int = 0, shots_type: str = "chosen") -> str:
    """The exemplars in the `plain` layout, each a prompt, a persona and the response that persona prefers.

    k = 0, the seed's way (`model/data_loader.py` `load_few_shot_data`, `Few-Shot/inference.py`): every
    record of `source` in file order, the side set by the training type `shots_type` (`all`: every
    chosen exemplar, then every rejected one); a record without that persona is an error. k > 0, ours:
    k drawn (seeded, uniformly) from the records that carry the persona of the view's side (chosen, or
    rejected for rejected-side sources)."""
    if k == 0:
        records = list(read_examples(source))
        shots = []
        for side in ("chosen", "rejected") if shots_type == "all" else (shots_type,):
            for ex in records:
                persona = ex.user.persona(side)
                if not persona:
                    raise RecordError(ex.source or source, None, f"{side}_persona",
                                      f"the seed's few-shot prompt uses every record's {side} persona; this has none")
                shots.append((ex.prompt, persona, preferred_order(ex.responses, None, side)[0][0]))
        return "".join(plain_shot(*shot) for shot in shots)
    side = "rejected" if persona_source in REJECTED_SIDE else "chosen"
    pool = [(ex.prompt, ex.user.persona(side), preferred_order(ex.responses, None, side)[0][0])
            for ex in read_examples(source)]
    pool = [shot for shot in pool if shot[1]]
    if len(pool) < k:
        raise ValueError(f"{source}: {k} few-shot exemplars asked for, but only {len(pool)} records carry a "
                         f"{side} persona")
    return "".join(plain_shot(*shot) for shot in random.Random(seed).sample(pool, k))


def view_requests(examples, view: ViewConfig, backend: Backend, prefix: str = "") -> tuple[list, list[dict]]:
    """The backend requests of `examples` under `view` (each after `prefix`, few-shot exemplars), and
    one output row (without response) per example."""
    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is None and view.template == "chat" and view.max_length is not None:
        raise ValueError("view.max_length needs a backend with a tokenizer (the local backend)")
    requests, rows = [], []
    for index, ex in enumerate(examples):
        r = build_view(ex, view, tokenizer, index)
        request = r.messages if tokenizer is None and r.messages is not None else prefix + r.prompt
        requests.append(request)
        side = "chosen" if view.persona_source in ("system", "chosen_in_system") else view.persona_source
        rows.append({  # chosen/rejected as the conditioning's user sees them (swapped under a rejected persona)
            "index": index, "source": ex.source, "prompt": ex.prompt, "view": view.view,
            "persona": view.fixed_persona or ex.user.persona(side), "view_prompt": request,
            "chosen": r.responses[0], "rejected": r.responses[-1],
        })
    return requests, rows


def check_generate(cfg: GenerateConfig, *, check_model: bool = True, overwrite: bool = False) -> None:
    """Before any model loads: the records (and the few-shot source), the backend, the reward model of
    best-of-n, and the run directory."""
    check_source(cfg.data, option="--data")
    if cfg.shots_from is not None:
        check_source(cfg.shots_from, option="--shots-from")
    if check_model:
        check_backend(cfg.backend)
    if cfg.reward_model is not None:
        check_model_dir(cfg.reward_model, option="--reward-model", kind="any")
    check_output_dir(cfg.out, inputs=[cfg.data, cfg.shots_from], own=GENERATE_OUTPUTS, overwrite=overwrite)


def generate_responses(
    cfg: GenerateConfig,
    backend: Backend | None = None,
    *,
    on_progress: Callable[[int], None] | None = None,
    overwrite: bool = False,
) -> Path:
    """Generate a response for every record of `cfg.data` into the run directory `cfg.out`; returns it.

    `backend` overrides `cfg.backend` (tests, or a model already in memory). The inputs, the backend and
    the run directory are checked first (files that are not a run's own need `overwrite`).
    """
    started = time.perf_counter()
    check_generate(cfg, check_model=backend is None, overwrite=overwrite)
    out = Path(cfg.out)
    cfg = with_trained_view(cfg, cfg.backend.model if cfg.backend.kind == "local" else None)
    examples = list(islice(read_examples(cfg.data, on_invalid=cfg.on_invalid, columns=cfg.columns), cfg.limit))
    if not examples:
        raise EmptyError("no valid record to generate for", file=cfg.data)
    backend = backend if backend is not None else make_backend(cfg.backend)
    prefix, generation = "", cfg.generation
    if cfg.shots_from:
        prefix = few_shot_prefix(cfg.shots_from, cfg.few_shot, cfg.view.persona_source, cfg.shots_seed, cfg.shots_type)
        if FEW_SHOT_STOP not in generation.stop:
            generation = generation.model_copy(update={"stop": [*generation.stop, FEW_SHOT_STOP]})
    requests, rows = view_requests(examples, cfg.view, backend, prefix)
    chunk = cfg.chunk_size or cfg.backend.requests_per_write
    out.mkdir(parents=True, exist_ok=True)
    state = process_state()
    samples = []
    with open_cache(out / CACHE_FILE, state) as cache:
        for k in range(cfg.best_of):
            config = generation.model_copy(update={"seed": generation.seed + k}) if cfg.best_of > 1 else generation
            samples.append(generate_cached(backend, requests, config, task=TASK, cache=cache, chunk_size=chunk,
                                           on_progress=on_progress, state=state))
    candidates = [list(c) for c in zip(*(r.outputs for r in samples))]
    best = best_of_n(cfg, examples, candidates, state) if cfg.best_of > 1 else None
    if not state.is_main_process:
        return out
    if best is not None:
        for row, chosen in zip(rows, best):
            row.update(chosen)
    else:
        for row, (response,) in zip(rows, candidates):
            row["response"] = response
    write_jsonl(rows, out / GENERATIONS_FILE)
    settings = cfg.model_dump(mode="json") | {
        "generation": generation.model_dump(mode="json"),
        "model": backend.identity,
        "counts": {"records": len(rows), "generated": sum(r.generated for r in samples),
                   "reused": sum(r.reused for r in samples)},
        "seconds": round(time.perf_counter() - started, 3),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json(out / SETTINGS_FILE, settings)
    return out


def best_of_n(cfg: GenerateConfig, examples: list, candidates: list[list[str]], state=None) -> list[dict]:
    """Per record, the candidate the reward model rewards most under its view of that record (ties: the
    first), with every candidate and its reward; the rewards come from one packed pass per record, the
    records shared out over the processes of `state` (every process gets them all)."""
    from personalign.models.rewards import ResponseRewards, load_reward_model
    from personalign.models.scorer import InMemoryRows, score_store
    from personalign.records.tokens import tokenize_pair

    rm_cfg = with_trained_view(cfg, cfg.reward_model, field="reward_view")
    view = rm_cfg.reward_view or cfg.view
    state = state or process_state()
    model, tokenizer = load_reward_model(cfg.reward_model, device=state.device)
    items = [tokenize_pair(tokenizer, build_view(ex, view, tokenizer, i).prompt, cands, view.max_length)
             for i, (ex, cands) in enumerate(zip(examples, candidates))]
    table = score_store(ResponseRewards(model), InMemoryRows(items), state=state, progress=True)
    out = []
    for rewards, cands in zip(table.logps[:, : cfg.best_of].tolist(), candidates):
        best = max(range(len(cands)), key=rewards.__getitem__)
        out.append({"response": cands[best], "best_index": best, "candidates": cands, "candidate_rewards": rewards})
    return out


def decoding_label(run_dir: str | Path) -> str | None:
    """How a run's responses were decoded ("greedy", "sampled (temperature 0.8)", "best of 4 by <reward
    model>"), from its generation.json; None without one."""
    path = Path(run_dir) / SETTINGS_FILE
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
        temperature = settings["generation"]["temperature"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if settings.get("best_of", 1) > 1:
        return f"best of {settings['best_of']} by {settings.get('reward_model')}"
    return "greedy" if temperature == 0 else f"sampled (temperature {temperature})"


def read_generations(run_dir: str | Path, *, option: str | None = None) -> list[dict]:
    """The rows of a run directory's generations.jsonl; a missing file or a row that is not a complete
    JSON object with `prompt` and `response` is a `UserError` naming its line."""
    path = Path(run_dir) / GENERATIONS_FILE
    if not path.is_file():
        raise UserError(f"no generations in this directory (run `personalign eval generate --out {run_dir}` first)",
                        file=path, option=option)
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as e:
                    raise CorruptFileError(f"not a complete JSON row ({e}); regenerate the run", file=path,
                                           line=n) from None
                for key in ("prompt", "response"):
                    if not isinstance(row, dict) or not isinstance(row.get(key), str):
                        raise CorruptFileError("a generation row needs string 'prompt' and 'response'", file=path,
                                               line=n, field=key)
                rows.append(row)
    except UnicodeDecodeError as e:
        raise CorruptFileError(f"not valid UTF-8 ({e.reason})", file=path) from None
    if not rows:
        raise EmptyError("the run holds no generations", file=path)
    return rows

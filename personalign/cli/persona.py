"""`personalign persona ...`: infer personas, judge them, word saliency, retrieval."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from personalign.cli._common import console, new_app
from personalign.data.io import check_source
from personalign.errors import EmptyError
from personalign.files import check_output_file, write_json
from personalign.llm import BackendConfig, check_backend, make_backend
from personalign.models.loading import check_model_dir

app = new_app()

Data = Annotated[str, typer.Option(
    "--data", help="Records: .jsonl, .json, .parquet, a save_to_disk directory or a hub dataset.")]
Kind = Annotated[Literal["local", "openai"], typer.Option(
    "--backend", help="local transformers model, or an OpenAI-compatible server.")]
Model = Annotated[Optional[str], typer.Option(
    "--model", help="local: model dir or name (default: embedded SmolLM2); openai: served model name.")]
BaseUrl = Annotated[Optional[str], typer.Option(
    "--base-url", help="openai: server URL, e.g. http://127.0.0.1:8000/v1.")]
ApiKeyEnv = Annotated[str, typer.Option(
    "--api-key-env", help="openai: NAME of the environment variable holding the key.")]
BatchSize = Annotated[int, typer.Option(
    "--batch-size", min=1, help="Requests per generate call (local) and per cache write.")]
Concurrency = Annotated[int, typer.Option("--concurrency", min=1, help="openai: requests in flight.")]
Limit = Annotated[Optional[int], typer.Option("--limit", min=1, help="Only the first N records.")]
Cache = Annotated[Optional[Path], typer.Option("--cache", help="Generation cache JSONL (default: <out>.cache.jsonl).")]
PromptFileOpt = Annotated[Optional[Path], typer.Option(
    "--prompt-file", help="Your own prompt (YAML/JSON: system, shots, user with {slots}); see docs/prompts.md.")]
VerdictModeOpt = Annotated[Literal["generate", "logprob"], typer.Option(
    "--verdict-mode", help="generate: read the judge's text; logprob: the probabilities of its answers 1/2, "
    "averaged over both orders (local models, or servers that return logprobs).")]


def _config(kind: str, model: str | None, base_url: str | None, api_key_env: str, batch_size: int,
            concurrency: int) -> BackendConfig:
    if kind == "local":
        check_model_dir(model, option="--model")
    cfg = BackendConfig(kind=kind, model=model, base_url=base_url, api_key_env=api_key_env, batch_size=batch_size,
                        concurrency=concurrency)
    check_backend(cfg)
    return cfg


def _chunk_size(cfg: BackendConfig) -> int:
    """Requests per cache write: one batch locally; a few rounds of concurrent calls to a server."""
    return cfg.batch_size if cfg.kind == "local" else 4 * cfg.concurrency


@contextmanager
def _progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


def _count(data: str, limit: int | None) -> int:
    from personalign.data.io import iter_raw

    return sum(1 for _ in islice(iter_raw(data), limit))


def _write_json(result: dict, out: Path | None) -> None:
    if out is not None:
        write_json(out, result)
        console.print(f"wrote {out}")


def _check_io(data: str, *outputs: tuple[Path | None, str], inputs: tuple = ()) -> None:
    """The input records exist and no output would overwrite an input or fail to be written."""
    check_source(data)
    written: list = []
    for path, option in outputs:
        if path is not None:
            check_output_file(path, inputs=[data, *inputs, *written], option=option)
            written.append(path)


@app.command("infer")
def infer(
    data: Data,
    out: Annotated[Path, typer.Option(
        "--out", help="Output records with chosen_persona / rejected_persona (.jsonl/.json/.parquet).")],
    backend: Kind = "local",
    model: Model = None,
    base_url: BaseUrl = None,
    api_key_env: ApiKeyEnv = "OPENAI_API_KEY",
    batch_size: BatchSize = 8,
    concurrency: Concurrency = 8,
    limit: Limit = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="Token budget per persona.")] = 64,
    side: Annotated[Optional[list[str]], typer.Option("--side", help="chosen and/or rejected (default both).")] = None,
    cache: Cache = None,
    prompt_file: PromptFileOpt = None,
) -> None:
    """Infer the persona behind each chosen (and rejected) response; resumable after a kill."""
    from personalign.data.io import record_writer
    from personalign.llm.base import GenerationConfig
    from personalign.llm.prompt_file import load_prompt_file
    from personalign.persona.infer import SIDES, default_cache_path, infer_personas
    from personalign.persona.prompts import INFER_SLOTS

    sides = tuple(side or SIDES)
    if set(sides) - set(SIDES):
        raise typer.BadParameter(f"expected chosen or rejected, got {sides}", param_hint="--side")
    template = load_prompt_file(prompt_file, INFER_SLOTS, {"preferred", "other"}) if prompt_file else None
    cache_path = cache if cache is not None else default_cache_path(out)
    _check_io(data, (out, "--out"), (cache_path, "--cache"), inputs=(prompt_file,))
    record_writer(out, option="--out")
    total = _count(data, limit) * len(sides)
    cfg = _config(backend, model, base_url, api_key_env, batch_size, concurrency)
    llm = make_backend(cfg)
    with _progress("inferring personas", total) as advance:
        stats = infer_personas(data, llm, out, sides=sides, cache_path=cache_path, limit=limit,
                               gen_config=GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0),
                               chunk_size=_chunk_size(cfg), on_progress=advance, prompt_file=template)
    console.print(
        f"wrote {stats.records} records with {stats.personas} personas to {out} "
        f"({stats.generated} generated, {stats.reused} reused from cache {cache_path} or duplicate records; "
        f"{stats.repaired} repaired to start with 'The user', {stats.empty} empty outputs left unset)"
    )
    if stats.cache_truncated_bytes or stats.cache_skipped_lines:
        console.print(f"[yellow]cache: cut a torn last line ({stats.cache_truncated_bytes} bytes), "
                      f"skipped {stats.cache_skipped_lines} unreadable lines[/]")


def _judge_inputs(data, limit, backend, model, base_url, api_key_env, batch_size, concurrency, out, cache):
    """(examples, backend config, judge cache path) shared by `accuracy` and `prefer`;
    the cache defaults to one beside `--out`, and there is none without either."""
    from personalign.data.io import read_examples
    from personalign.persona.infer import default_cache_path

    cache_path = cache if cache is not None else default_cache_path(out) if out is not None else None
    _check_io(data, (out, "--out"), (cache_path, "--cache"))
    examples = list(islice(read_examples(data), limit))
    if not examples:
        raise EmptyError("no records to judge", file=data)
    return examples, _config(backend, model, base_url, api_key_env, batch_size, concurrency), cache_path


@app.command("accuracy")
def accuracy(
    data: Data,
    persona_field: Annotated[
        Literal["chosen_persona", "rejected_persona", "ground_truth_persona"],
        typer.Option("--persona-field", help="Which persona to judge (its target response: chosen, rejected, chosen)."),
    ] = "chosen_persona",
    backend: Kind = "local",
    model: Model = None,
    base_url: BaseUrl = None,
    api_key_env: ApiKeyEnv = "OPENAI_API_KEY",
    batch_size: BatchSize = 8,
    concurrency: Concurrency = 8,
    limit: Limit = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the result as JSON here.")] = None,
    cache: Cache = None,
    verdict_mode: VerdictModeOpt = "generate",
    prompt_file: PromptFileOpt = None,
) -> None:
    """Persona accuracy: does a judge pick the persona's response, in both orders? 0.5 is chance."""
    from personalign.llm.prompt_file import load_prompt_file
    from personalign.persona.judge import persona_accuracy
    from personalign.persona.prompts import ACCURACY_SLOTS

    template = load_prompt_file(prompt_file, ACCURACY_SLOTS, {"first", "second"}) if prompt_file else None

    examples, cfg, cache_path = _judge_inputs(data, limit, backend, model, base_url, api_key_env, batch_size,
                                              concurrency, out, cache)
    n = sum(bool(ex.user.personas.get(persona_field)) for ex in examples)
    if n == 0:
        raise EmptyError(f"no record has a {persona_field} to judge (run `personalign persona infer` first)",
                         file=data, option="--persona-field")
    llm = make_backend(cfg)
    with _progress("judging", 2 * n) as advance:
        result = persona_accuracy(examples, llm, persona_field=persona_field, cache_path=cache_path,
                                  chunk_size=_chunk_size(cfg), on_progress=advance, verdict_mode=verdict_mode, prompt_file=template)
    e = result.accuracy
    table = Table(title=f"persona accuracy · {persona_field} · judge {result.judge}")
    for col in ("personas", "accuracy", "95% CI", "target 1st", "target 2nd", "unparseable", "missing"):
        table.add_column(col, justify="right")
    table.add_row(str(result.n_personas), f"{e.value:.3f}", f"[{e.low:.3f}, {e.high:.3f}]",
                  f"{result.target_first:.3f}", f"{result.target_second:.3f}", str(result.unparseable),
                  str(result.missing))
    console.print(table)
    _write_json(result.as_dict(), out)


@app.command("prefer")
def prefer(
    data: Data,
    backend: Kind = "local",
    model: Model = None,
    base_url: BaseUrl = None,
    api_key_env: ApiKeyEnv = "OPENAI_API_KEY",
    batch_size: BatchSize = 8,
    concurrency: Concurrency = 8,
    limit: Limit = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the result as JSON here.")] = None,
    cache: Cache = None,
    verdict_mode: VerdictModeOpt = "generate",
    prompt_file: PromptFileOpt = None,
) -> None:
    """Persona preference: chosen vs. rejected persona, both orders; disagreement is a tie."""
    from personalign.llm.prompt_file import load_prompt_file
    from personalign.persona.judge import persona_preference
    from personalign.persona.prompts import PREFER_SLOTS

    template = load_prompt_file(prompt_file, PREFER_SLOTS, {"first", "second"}) if prompt_file else None

    examples, cfg, cache_path = _judge_inputs(data, limit, backend, model, base_url, api_key_env, batch_size,
                                              concurrency, out, cache)
    n = sum(bool(ex.user.personas.get("chosen_persona") and ex.user.personas.get("rejected_persona"))
            for ex in examples)
    if n == 0:
        raise EmptyError("no record has both a chosen_persona and a rejected_persona to compare (run "
                         "`personalign persona infer` first)", file=data)
    llm = make_backend(cfg)
    with _progress("judging", 2 * n) as advance:
        result = persona_preference(examples, llm, cache_path=cache_path, chunk_size=_chunk_size(cfg),
                                    on_progress=advance, verdict_mode=verdict_mode, prompt_file=template)
    rates = result.rates()
    table = Table(title=f"persona preference · judge {result.judge}")
    for col in ("pairs", "chosen wins", "ties", "rejected wins", "unparseable", "missing"):
        table.add_column(col, justify="right")
    table.add_row(str(result.n), f"{rates['chosen']:.3f}", f"{rates['tie']:.3f}", f"{rates['rejected']:.3f}",
                  str(result.unparseable), str(result.missing))
    console.print(table)
    _write_json(result.as_dict(), out)


@app.command("saliency")
def saliency(
    data: Data,
    cutoff: Annotated[int, typer.Option("--cutoff", min=1, help="Minimum count of a word over all personas.")] = 10,
    top: Annotated[int, typer.Option("--top", min=1, help="Words shown per label.")] = 20,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write every label's full list as JSON here.")] = None,
) -> None:
    """The words most specific to chosen vs. rejected personas."""
    from personalign.data.io import read_examples
    from personalign.persona.saliency import personas_by_side, word_saliency, write_saliency

    _check_io(data, (out, "--out"))
    labels = personas_by_side(read_examples(data))
    if not any(labels.values()):
        raise EmptyError("no record has chosen_persona or rejected_persona", file=data)
    result = word_saliency(labels, cutoff=cutoff)
    for label, rows in result.items():
        table = Table(title=f"most salient words of {label} personas ({len(labels[label])} personas, cutoff {cutoff})")
        for col in ("word", "saliency", "count"):
            table.add_column(col, justify="left" if col == "word" else "right")
        for word, value, count in rows[:top]:
            table.add_row(word, f"{value:.3f}", str(count))
        console.print(table)
    if out is not None:
        console.print(f"wrote {write_saliency(out, result)}")


@app.command("retrieve")
def retrieve(
    train: Annotated[str, typer.Option("--train", help="Training records holding personas.")],
    data: Data,
    out: Annotated[Path, typer.Option("--out", help="Output records with retrieved_chosen/rejected_persona.")],
    model_path: Annotated[Optional[Path], typer.Option(
        "--model-path", help="sentence-transformers dir (default: packaged all-MiniLM-L6-v2).")] = None,
) -> None:
    """Give each record the personas of the training record with the most similar prompt (never itself)."""
    from personalign.data.io import record_writer
    from personalign.persona.retrieve import retrieve_personas

    check_source(train, option="--train")
    _check_io(data, (out, "--out"), inputs=(train,))
    record_writer(out, option="--out")
    with console.status("embedding prompts"):
        try:
            stats = retrieve_personas(train, data, out, model_path=model_path)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--train") from None
    console.print(f"wrote {stats.records} records to {out}: {stats.retrieved} with retrieved personas from "
                  f"{stats.train_records} training records ({stats.train_prompts} prompts); "
                  f"{stats.excluded_self} records' own copies excluded")

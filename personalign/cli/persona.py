"""`personalign persona ...`: infer personas, judge them, word saliency, retrieval."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from personalign.cli._common import (
    ApiKeyEnv,
    BaseUrl,
    BatchSize,
    Cache,
    Concurrency,
    ConfigFile,
    Data,
    Kind,
    Limit,
    Model,
    Overrides,
    PromptFileOpt,
    VerdictModeOpt,
    backend_options,
    command_config,
    console,
    main_process,
    new_app,
)
from personalign.errors import EmptyError
from personalign.persona.judge import PersonaField, PersonaJudgeConfig
from personalign.persona.saliency import Lemmatizer, SaliencyMethod
from personalign.records.io import check_io, check_source

app = new_app()

RequiredData = Annotated[str, typer.Option(
    "--data", help="Records: .jsonl, .json, .parquet, a save_to_disk directory or a hub dataset.")]
OutJson = Annotated[Optional[Path], typer.Option("--out", help="Write the result as JSON here.")]


@app.command("infer")
def infer(
    data: Data = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="Output records with chosen_persona / rejected_persona (.jsonl/.json/.parquet).")] = None,
    backend: Kind = None,
    model: Model = None,
    base_url: BaseUrl = None,
    api_key_env: ApiKeyEnv = None,
    batch_size: BatchSize = None,
    concurrency: Concurrency = None,
    limit: Limit = None,
    max_new_tokens: Annotated[Optional[int], typer.Option(
        "--max-new-tokens", min=1, help="Token budget per persona (default 64).")] = None,
    side: Annotated[Optional[list[str]], typer.Option("--side", help="chosen and/or rejected (default both).")] = None,
    cache: Cache = None,
    prompt_file: PromptFileOpt = None,
    config: ConfigFile = None,
    overrides: Overrides = None,
) -> None:
    """Infer the persona behind each chosen (and rejected) response; resumable after a kill."""
    from personalign.persona.infer import SIDES, InferConfig, run_infer

    if side and set(side) - set(SIDES):
        raise typer.BadParameter(f"expected chosen or rejected, got {tuple(side)}", param_hint="--side")
    cfg = command_config(InferConfig, config, {
        "data": data, "out": out, "sides": side or None, "limit": limit, "max_new_tokens": max_new_tokens,
        "cache": cache, "prompt_file": prompt_file,
        **backend_options(backend, model, base_url, api_key_env, batch_size, concurrency)}, overrides)
    stats = run_infer(cfg)
    if not main_process():
        return
    console.print(
        f"wrote {stats.records} records with {stats.personas} personas to {cfg.out} "
        f"({stats.generated} generated, {stats.reused} reused from cache {cfg.cache_path()} or duplicate records; "
        f"{stats.repaired} repaired to start with 'The user', {stats.empty} empty outputs left unset)"
    )
    if stats.cache_truncated_bytes or stats.cache_skipped_lines:
        console.print(f"[yellow]cache: cut a torn last line ({stats.cache_truncated_bytes} bytes), "
                      f"skipped {stats.cache_skipped_lines} unreadable lines[/]")


@app.command("accuracy")
def accuracy(
    data: Data = None,
    persona_field: Annotated[Optional[PersonaField], typer.Option(
        "--persona-field", help="Which persona to judge (its target response: chosen, rejected, chosen); "
        "default chosen_persona.")] = None,
    backend: Kind = None,
    model: Model = None,
    base_url: BaseUrl = None,
    api_key_env: ApiKeyEnv = None,
    batch_size: BatchSize = None,
    concurrency: Concurrency = None,
    limit: Limit = None,
    out: OutJson = None,
    cache: Cache = None,
    verdict_mode: VerdictModeOpt = None,
    prompt_file: PromptFileOpt = None,
    config: ConfigFile = None,
    overrides: Overrides = None,
) -> None:
    """Persona accuracy: does a judge pick the persona's response, in both orders? 0.5 is chance."""
    _persona_judge("accuracy", locals())


def prefer(**options) -> None:
    """Persona preference: chosen vs. rejected persona, both orders; disagreement is a tie."""
    _persona_judge("prefer", options)


# `prefer` takes every option of `accuracy` but --persona-field: one signature, declared once.
_JUDGE_SIGNATURE = inspect.signature(accuracy, eval_str=True)
prefer.__signature__ = _JUDGE_SIGNATURE.replace(
    parameters=[p for p in _JUDGE_SIGNATURE.parameters.values() if p.name != "persona_field"])
app.command("prefer")(prefer)


def _persona_judge(task: str, options: dict) -> None:
    """Parse the options, call the stage's entry, print the result table (and write it with --out)."""
    from personalign.persona.judge import judge_persona_accuracy, judge_persona_preference, write_persona_result

    o = dict(options)
    settings = {"data": o["data"], "limit": o["limit"], "out": o["out"], "cache": o["cache"],
                "verdict_mode": o["verdict_mode"], "prompt_file": o["prompt_file"],
                "persona_field": o.get("persona_field"),
                **backend_options(o["backend"], o["model"], o["base_url"], o["api_key_env"], o["batch_size"],
                                  o["concurrency"])}
    cfg = command_config(PersonaJudgeConfig, o["config"], settings, o["overrides"])
    result = (judge_persona_accuracy if task == "accuracy" else judge_persona_preference)(cfg)
    if not main_process():
        return
    if task == "accuracy":
        e = result.accuracy
        table = Table(title=f"persona accuracy · {cfg.persona_field} · judge {result.judge}")
        columns = ("personas", "accuracy", "95% CI", "target 1st", "target 2nd", "unparseable", "missing")
        row = (str(result.n_personas), f"{e.value:.3f}", f"[{e.low:.3f}, {e.high:.3f}]", f"{result.target_first:.3f}",
               f"{result.target_second:.3f}", str(result.unparseable), str(result.missing))
    else:
        rates = result.rates()
        table = Table(title=f"persona preference · judge {result.judge}")
        columns = ("pairs", "chosen wins", "ties", "rejected wins", "unparseable", "missing")
        row = (str(result.n), f"{rates['chosen']:.3f}", f"{rates['tie']:.3f}", f"{rates['rejected']:.3f}",
               str(result.unparseable), str(result.missing))
    for col in columns:
        table.add_column(col, justify="right")
    table.add_row(*row)
    console.print(table)
    if cfg.out is not None:
        console.print(f"wrote {write_persona_result(cfg.out, result)}")


@app.command("saliency")
def saliency(
    data: RequiredData,
    cutoff: Annotated[Optional[int], typer.Option(
        "--cutoff", min=1, help="Minimum count of a word over all personas (default: 3 for seed, 10 for ours).")] = None,
    method: Annotated[SaliencyMethod, typer.Option(
        "--method",
        help="seed: persona-anon's word_saliency.py (substring split, lemmas, no stop words); "
             "ours: whole-word split, stop words, no lemmas.")] = "seed",
    lemmatizer: Annotated[Lemmatizer, typer.Option(
        "--lemmatizer",
        help="Lemmas for --method seed: simplemma (shipped) or nltk WordNet (the seed's; needs its data).")] = "simplemma",
    top: Annotated[int, typer.Option("--top", min=1, help="Words shown per label.")] = 20,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write every label's full list as JSON here.")] = None,
) -> None:
    """The words most specific to chosen vs. rejected personas."""
    from personalign.persona.saliency import METHOD_CUTOFF, personas_by_side, word_saliency, write_saliency
    from personalign.records.io import read_examples

    check_io(data, (out, "--out"))
    labels = personas_by_side(read_examples(data))
    if not any(labels.values()):
        raise EmptyError("no record has chosen_persona or rejected_persona", file=data)
    cutoff = METHOD_CUTOFF[method] if cutoff is None else cutoff
    result = word_saliency(labels, cutoff=cutoff, method=method, lemmatizer_name=lemmatizer)
    for label, rows in result.items():
        table = Table(title=f"most salient words of {label} personas ({len(labels[label])} personas, {method}, cutoff {cutoff})")
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
    data: RequiredData,
    out: Annotated[Path, typer.Option("--out", help="Output records with retrieved_chosen/rejected_persona.")],
    model_path: Annotated[Optional[Path], typer.Option(
        "--model-path", help="sentence-transformers dir (default: packaged all-MiniLM-L6-v2).")] = None,
) -> None:
    """Give each record the personas of the training record with the most similar prompt (never itself)."""
    from personalign.persona.retrieve import retrieve_personas
    from personalign.records.io import record_writer

    check_source(train, option="--train")
    check_io(data, (out, "--out"), inputs=(train,))
    record_writer(out, option="--out")
    with console.status("embedding prompts"):
        try:
            stats = retrieve_personas(train, data, out, model_path=model_path)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--train") from None
    console.print(f"wrote {stats.records} records to {out}: {stats.retrieved} with retrieved personas from "
                  f"{stats.train_records} training records ({stats.train_prompts} prompts); "
                  f"{stats.excluded_self} records' own copies excluded")

"""`personalign data ...`: validate, stats, build-views, synth, rank-split, subsets, diversity, select."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Literal

import typer

from personalign.cli._common import ConfigFile, Overrides, command_config, console, err_console, new_app
from personalign.errors import EmptyError
from personalign.files import check_output_dir, check_output_file, write_json
from personalign.records.errors import RecordError
from personalign.records.io import OnInvalid
from personalign.records.tokens import Convention
from personalign.views.build import PersonaSourceName, ViewConfig
from personalign.views.templates import TemplateName, ViewName

app = new_app()


def _load_tokenizer(name: str | None):
    """The `--tokenizer` option: None, or the tokenizer `personalign.models.loading.load_tokenizer` loads."""
    if name is None:
        return None
    from personalign.models.loading import check_model_dir, load_tokenizer

    check_model_dir(name, option="--tokenizer", tokenizer_only=True)
    return load_tokenizer(name, pad=False)


@app.command("build-views")
def build_views(
    file: Annotated[str, typer.Argument(help="Records: .jsonl, .json, .parquet, a save_to_disk directory, or a hub dataset.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output JSONL, one rendered example per line.")],
    view: Annotated[ViewName, typer.Option(help="Conditioning view.")] = "none",
    template: Annotated[TemplateName, typer.Option(help="Prompt template preset.")] = "chat",
    tokenizer: Annotated[str | None, typer.Option(help="Tokenizer directory (AutoTokenizer.from_pretrained) for the chat template and "
        "--max-length. "
        "Without it nothing is truncated and the chat preset is written as ChatML.")] = None,
    max_length: Annotated[int | None, typer.Option(min=1, help="Token budget: prompt + longest response + EOS (needs "
        "--tokenizer).")] = None,
    sample_history: Annotated[bool, typer.Option("--sample-history/--all-history", help="AlignX training-style sampling, or all history "
        "(evaluation).")] = False,
    seed: Annotated[int, typer.Option(help="Seed for --sample-history.")] = 0,
    include_demographic: Annotated[bool, typer.Option(help="ica: append the demographic text (always in alignx-eval).")] = False,
    persona_source: Annotated[PersonaSourceName, typer.Option(help="persona: which persona text to use. Under rejected / "
        "retrieved_rejected the rejected response "
        "is the preferred one (listed first); all renders both sides; system is the seed's fixed generic persona "
        "(--system-persona); chosen_in_system puts the chosen persona in the chat system message.")] = "chosen",
    system_persona: Annotated[str | None, typer.Option(help="--persona-source system: a dataset's fixed persona (BeaverTails, Mnemonic, "
        "Anthropic HHH) or text.")] = None,
    dimensions: Annotated[Path | None, typer.Option(help="Preference dimension table (default: the AlignX table shipped with "
        "personalign).")] = None,
    on_invalid: Annotated[OnInvalid, typer.Option(help="Stop at the first invalid record, or skip them.")] = "fail",
    rejects: Annotated[Path | None, typer.Option(help="With --on-invalid skip: write skipped records to this JSONL file.")] = None,
) -> None:
    """Render records into prompts under a view and template, one JSON object per example."""
    from dataclasses import fields

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from personalign.records.io import ReadCounts, read_examples, write_jsonl
    from personalign.views.build import ViewCounts, render_views

    if max_length is not None and tokenizer is None:
        raise typer.BadParameter("--max-length needs --tokenizer to count tokens", param_hint="--max-length")
    check_output_file(out, inputs=[file, dimensions])
    if rejects is not None:
        check_output_file(rejects, inputs=[file, out], option="--rejects")
    cfg = command_config(ViewConfig, None, {
        "view": view, "template": template, "sample_history": sample_history, "seed": seed,
        "include_demographic": include_demographic, "persona_source": persona_source, "max_length": max_length,
        "dimensions": dimensions, "system_persona": system_persona}, None)
    tok = _load_tokenizer(tokenizer)

    read, counts = ReadCounts(), ViewCounts()
    examples = read_examples(file, on_invalid=on_invalid, rejects_path=rejects, counts=read)
    columns = (SpinnerColumn(), TextColumn("rendering {task.completed} records"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("render")

        def rows():
            for r in render_views(examples, cfg, tok):
                counts.add(r)
                progress.advance(task)
                yield {**{f.name: getattr(r, f.name) for f in fields(r)}, "view": cfg.view, "template": cfg.template}

        written = write_jsonl(rows(), out)
    if not written:
        out.unlink(missing_ok=True)
        raise EmptyError(f"no valid record to render: {read.rejected} of {read.seen} records were invalid and skipped",
                         file=file)

    table = Table(title=f"build-views: {cfg.view} / {cfg.template} -> {out}")
    table.add_column("count")
    table.add_column("value", justify="right")
    table.add_row("records skipped (invalid)", str(read.rejected))
    for key, value in counts.summary().items():
        table.add_row(key.replace("_", " "), str(value))
    console.print(table)


@app.command("synth")
def synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file: .jsonl, .json or .parquet.")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of records.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed (the output is a function of the seed).")] = 0,
    kind: Annotated[Literal["alignx", "ranking"], typer.Option(help="AlignX user-level pairs, or ranking records.")] = "alignx",
    k: Annotated[int, typer.Option("--k", min=2, help="ranking: responses per prompt.")] = 4,
) -> None:
    """Write synthetic records whose preferred reply depends on the user's history."""
    from rich.progress import MofNCompleteColumn, Progress, TimeElapsedColumn

    from personalign.curate.synth import synth_ranking, synth_records
    from personalign.records.io import record_writer

    check_output_file(out)
    writer = record_writer(out, option="--out")
    try:
        records = synth_records(n, seed=seed) if kind == "alignx" else synth_ranking(n, k=k, seed=seed)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--k") from None
    with Progress(*Progress.get_default_columns()[:-1], MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task(f"synth {kind}", total=n)

        def tracked():
            for i, rec in enumerate(records, 1):
                yield rec
                if i % 1000 == 0 or i == n:
                    progress.update(task, completed=i)

        written = writer(tracked(), out)
    size = out.stat().st_size / 1e6
    console.print(f"wrote {written} {kind} records to {out} ({size:.1f} MB, seed {seed})", highlight=False)


@app.command("export-memory")
def export_memory(
    memory: Annotated[str, typer.Option("--memory", help="The memory database: a SQLAlchemy URL, e.g. sqlite:///users.db.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file: .jsonl, .json or .parquet.")],
) -> None:
    """Write the feedback in a memory database as AlignX records, ready for `train`: one per stored pair,
    whose history is what the user had before it (no record sees its own label)."""
    from personalign.errors import require_extra

    require_extra("memory", "personalign data export-memory")
    from personalign.memory.store import MemoryStore
    from personalign.records.io import record_writer

    check_output_file(out)
    writer = record_writer(out, option="--out")
    store = MemoryStore(memory)
    try:
        counts = store.counts()
        written = writer(store.export_records(), out)
    finally:
        store.close()
    console.print(f"wrote {written} records from {counts['users']} users ({counts['items']} history items) to {out}",
                  highlight=False)


@app.command("stats")
def stats(
    file: Annotated[str, typer.Argument(help="Records: .jsonl, .json, .parquet, a save_to_disk directory, or a hub dataset.")],
    tokenizer: Annotated[str | None, typer.Option(help="Tokenizer directory (AutoTokenizer.from_pretrained): adds token lengths.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the statistics to this JSON file.")] = None,
    top: Annotated[int, typer.Option(min=0, help="How many of the most used preference dimensions to show.")] = 10,
    on_invalid: Annotated[OnInvalid, typer.Option(help="Stop at the first invalid record, or skip invalid records.")] = "fail",
) -> None:
    """Lengths, history sizes, user signals, slices and preference-dimension usage of a data file."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from personalign.curate.stats import compute_stats
    from personalign.records.io import ReadCounts, read_examples

    if json_out is not None:
        check_output_file(json_out, inputs=[file], option="--json")
    tok = _load_tokenizer(tokenizer)
    read = ReadCounts()
    columns = (SpinnerColumn(), TextColumn("reading {task.completed} records"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("stats")

        def tracked():
            for i, ex in enumerate(read_examples(file, on_invalid=on_invalid, counts=read), 1):
                yield ex
                if i % 1000 == 0:
                    progress.update(task, completed=i)

        s = compute_stats(tracked(), tok)
    if s.records == 0:
        raise EmptyError(f"no valid record: all {read.rejected} records were invalid and skipped", file=file)

    overview = Table(title=f"{file}: {s.records} records")
    overview.add_column("records with")
    overview.add_column("count", justify="right")
    overview.add_column("%", justify="right")
    rows = [("demographic", s.with_demographic), ("direction", s.with_direction), ("profile", s.with_profile),
            ("personas", s.with_personas), ("rewards", s.with_rewards)]
    rows += [(f"{k} responses", v) for k, v in s.responses.items()]
    rows += [(f"slice {k}", v) for k, v in s.slices.items()]
    if read.rejected:
        rows.append(("invalid (skipped)", read.rejected))
    for name, count in rows:
        overview.add_row(name, str(count), f"{100 * count / max(s.records, 1):.1f}")
    console.print(overview)

    lengths = Table(title="lengths (p5 / p50 / p95 / max, mean)")
    lengths.add_column("field")
    lengths.add_column("characters", justify="right")
    if s.tokens is not None:
        lengths.add_column("tokens", justify="right")
    for f, c in s.chars.items():
        both = [c] if s.tokens is None else [c, s.tokens[f]]
        lengths.add_row(f, *(f"{x.p5} / {x.p50} / {x.p95} / {x.max}, {x.mean:.0f}" for x in both))
    console.print(lengths)

    history = Table(title="history items per record")
    history.add_column("items", justify="right")
    history.add_column("UGC records", justify="right")
    history.add_column("pair records", justify="right")
    for size in sorted(set(s.ugc_per_record) | set(s.pairs_per_record)):
        history.add_row(str(size), str(s.ugc_per_record.get(size, 0)), str(s.pairs_per_record.get(size, 0)))
    console.print(history)

    if s.dimensions and top:
        dims = Table(title=f"most used preference dimensions ({len(s.dimensions)} used of 90)")
        for col, justify in (("#", "right"), ("value 1", "left"), ("records", "right"), ("value 0", "left"), ("records", "right")):
            dims.add_column(col, justify=justify)
        for d in s.dimensions[:top]:
            dims.add_row(str(d.index), d.positive, str(d.ones), d.negative, str(d.zeros))
        console.print(dims)
    if json_out is not None:
        write_json(json_out, s.to_dict())
        console.print(f"wrote {json_out}", highlight=False)


@app.command("tokenize")
def tokenize(
    config: ConfigFile = None,
    overrides: Overrides = None,
) -> None:
    """Build the token stores a `train` config reads (its data and eval data), e.g. on a CPU node ahead
    of a GPU job; `train` with the same config then finds them. Takes the train config's keys."""
    from personalign.models.loading import check_model_dir, load_tokenizer, resolve_model
    from personalign.records.io import check_source
    from personalign.tokenstore.store import load_store
    from personalign.train.collate import run_specs
    from personalign.train.config import TrainConfig

    cfg = command_config(TrainConfig, config, {}, overrides)
    for source, option in ((cfg.data, "data"), (cfg.eval_data, "eval_data")):
        if source is not None:
            check_source(source, option=option)
    check_model_dir(cfg.model, option="model", tokenizer_only=True)
    tokenizer = load_tokenizer(resolve_model(cfg.model))
    for source, spec in run_specs(cfg):
        store, hit = load_store(source, spec, tokenizer, num_proc=cfg.dataset_num_proc)
        c = store.counts
        console.print(f"[bold]{source}[/]: {c['records']:,} records, {c['tokens']:,} tokens ({c['prompt_tokens']:,} "
                      f"prompt, {c['response_tokens']:,} response), {c['truncated_for_length']:,} truncated for "
                      f"max_length, {c['rejected']:,} rejected\n  -> {store.path}" + (" (already built)" if hit else ""),
                      highlight=False)


@app.command("validate")
def validate(
    file: Annotated[str, typer.Argument(help="Records: .jsonl, .json, .parquet, a save_to_disk directory, or a hub dataset name[:split].")],
    on_invalid: Annotated[OnInvalid, typer.Option(help="Stop at the first invalid record (exit 2), or skip and count them.")] = "fail",
    rejects: Annotated[Path | None, typer.Option(help="With --on-invalid skip: JSONL of rejected records (default: FILE stem + "
        ".rejects.jsonl next to FILE).")] = None,
) -> None:
    """Check every record against its format; report accepted and rejected counts."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table
    from rich.text import Text

    from personalign.records.io import default_rejects_path, validate_file

    rejects_path = (rejects or default_rejects_path(file)) if on_invalid == "skip" else None
    if rejects_path is not None:
        check_output_file(rejects_path, inputs=[file], option="--rejects")
    columns = (SpinnerColumn(), TextColumn("validating: {task.fields[accepted]} accepted, {task.fields[rejected]} rejected"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("validate", accepted=0, rejected=0)
        counts = validate_file(
            file, on_invalid=on_invalid, rejects_path=rejects_path,
            progress=lambda c: progress.update(task, accepted=c.accepted, rejected=c.rejected),
        )
    console.print(Text.assemble(
        (file, "bold"), ": ", (f"{counts.accepted} accepted", "green"), ", ",
        (f"{counts.rejected} rejected", "red" if counts.rejected else ""),
    ))
    if counts.rejected:
        table = Table("rejected at field", "records")
        for field_name, n in counts.by_field.most_common():
            table.add_row(field_name, str(n))
        console.print(table)
        console.print(f"rejected records written to {rejects_path}", highlight=False)
        if counts.accepted == 0:
            raise typer.Exit(1)


@contextmanager
def _usage_errors(param_hint: str | None = None) -> Iterator[None]:
    """Library `ValueError`s about the arguments as usage errors; record errors pass through."""
    try:
        yield
    except RecordError:
        raise
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint=param_hint) from None


def _prompts_and_tokenizer(files: list[str], tokenizer: str | None) -> tuple[dict[str, list[str]], object]:
    """The prompts of each file, and the tokenizer (default: the embedded model's)."""
    from personalign.models.loading import load_tokenizer
    from personalign.records.io import read_examples

    prompts = {f: [ex.prompt for ex in read_examples(f)] for f in files}
    with _usage_errors("--tokenizer"):
        return prompts, load_tokenizer(tokenizer)


@app.command("rank-split")
def rank_split(
    file: Annotated[str, typer.Argument(help="Ranking records (n responses each): .jsonl, .json, .parquet or a dataset.")],
    k: Annotated[list[int], typer.Option("--k", min=2, help="Responses to keep per prompt; repeat for several files.")],
    out_dir: Annotated[Path, typer.Option("--out", "--out-dir", "-o", help="Directory for the ranking-k files.")],
    seed: Annotated[int, typer.Option(help="Seed of the per-record choice of responses.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Write into a directory that holds other files.")] = False,
) -> None:
    """Ranking-n -> ranking-k files: k responses per prompt picked at random (seeded per record), best-first."""
    from personalign.curate.ranking import RANK_SPLIT_OUTPUTS
    from personalign.curate.ranking import rank_split as split

    check_output_dir(out_dir, inputs=[file], own=RANK_SPLIT_OUTPUTS, overwrite=overwrite, option="--out")
    with _usage_errors("--k"):
        paths = split(file, k, out_dir, seed)
    for kk, path in paths.items():
        console.print(f"ranking-{kk}: {path}", highlight=False)


@app.command("subsets")
def subsets(
    inputs: Annotated[list[str], typer.Argument(help="Ranking-k files, or directories of them (as rank-split writes).")],
    budget: Annotated[int, typer.Option(min=1, help="Responses per subset: N prompts × k = budget for every k.")],
    k: Annotated[list[int], typer.Option("--k", min=2, help="Ranking size; repeat for several subsets.")],
    out_dir: Annotated[Path, typer.Option("--out", "--out-dir", "-o", help="Directory for the subsets and manifest.json.")],
    seed: Annotated[int, typer.Option(help="Seed of the one prompt shuffle.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Write into a directory that holds other files.")] = False,
) -> None:
    """Nested equal-budget subsets: one seeded shuffle of the prompts, the first budget/k of it per k."""
    from rich.table import Table

    from personalign.curate.ranking import MANIFEST, SUBSET_OUTPUTS, equal_budget_subsets

    check_output_dir(out_dir, inputs=inputs, own=SUBSET_OUTPUTS, overwrite=overwrite, option="--out")
    with _usage_errors():
        manifest = equal_budget_subsets(inputs, budget, k, out_dir, seed)
    table = Table(title=f"equal-budget subsets: budget {budget}, seed {seed}, {manifest['prompts']} prompts")
    for col in ("k", "prompts", "responses", "file"):
        table.add_column(col, justify="left" if col == "file" else "right")
    for s in manifest["subsets"]:
        table.add_row(str(s["k"]), str(s["n"]), str(s["n"] * s["k"]), str(out_dir / s["file"]))
    console.print(table)
    console.print(f"manifest: {out_dir / MANIFEST}", highlight=False)


@app.command("diversity")
def diversity(
    files: Annotated[list[str], typer.Argument(help="Record files; the prompts are measured.")],
    tokenizer: Annotated[str | None, typer.Option(help="Tokenizer directory or model (default: the embedded model's).")] = None,
    semantic: Annotated[bool, typer.Option("--semantic", help="Also the mean pairwise cosine distance of all-MiniLM-L6-v2 "
        "embeddings.")] = False,
    plot: Annotated[Path | None, typer.Option(help="PNG of D against subset size (nested prefixes of a seeded shuffle).")] = None,
    sizes: Annotated[str | None, typer.Option(help="Subset sizes for the curve, comma-separated (default with --plot: 10 "
        "even steps).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the shuffle behind the curve.")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write D and the curves as JSON (read by `personalign report`).")] = None,
    convention: Annotated[Convention, typer.Option(help="Tokenization: personalign (BOS per the tokenizer, no truncation) or "
        "scaling-alignment "
        "(the paper's: all default special tokens, prompts cut at 512 tokens).")] = "personalign",
) -> None:
    """Prompt diversity D = √N · distinct / total token bigrams (docs/fidelity.md), per file."""
    from rich.table import Table

    from personalign.curate import diversity as div

    with _usage_errors("--sizes"):
        wanted = [int(x) for x in sizes.split(",") if x.strip()] if sizes else []
    if any(s < 1 for s in wanted):
        raise typer.BadParameter(f"subset sizes must be positive, got {sizes}", param_hint="--sizes")
    if plot is not None:
        check_output_file(plot, inputs=files, option="--plot")
    if json_out is not None:
        check_output_file(json_out, inputs=[*files, plot], option="--json")
    prompts, tok = _prompts_and_tokenizer(files, tokenizer)
    encoder = None
    if semantic:
        from personalign.models.embeddings import embed, load_encoder

        encoder = load_encoder()
    table = Table(title="prompt diversity")
    for col in ("file", "prompts", "bigrams", "distinct", "D", *(["semantic"] if semantic else [])):
        table.add_column(col, justify="left" if col == "file" else "right")
    curves = {}
    for f, texts in prompts.items():
        bigrams = div.Bigrams.from_token_ids(div.tokenize(texts, tok, convention=convention))
        d = div.diversity(bigrams)
        cells = [f, str(d.n), str(d.total), str(d.distinct), f"{d.d:.4f}" if d.total else "n/a"]
        if not d.total:
            err_console.print(f"warning: {f}: no prompt has two tokens, so there is no bigram and D (0/0) is "
                              "undefined; it is shown as n/a and written as 0", highlight=False)
        if semantic:
            with _usage_errors("--semantic"):
                cells.append(f"{div.mean_cosine_distance(embed(encoder, texts)):.4f}")
        table.add_row(*cells)
        steps = [s for s in wanted if s <= d.n] if wanted else sorted({max(1, d.n * i // 10) for i in range(1, 11)})
        if wanted or plot is not None or json_out is not None:
            with _usage_errors("--sizes"):
                curves[f] = div.diversity_curve(bigrams, steps, seed)
    console.print(table)
    for f, points in curves.items():
        console.print(f"{f}: " + ", ".join(f"N={p.n} D={p.d:.4f}" for p in points), highlight=False)
    if plot is not None:
        from personalign.report.plots import diversity_figure, write_png

        figure = diversity_figure(", ".join(prompts), div.diversity_doc(curves, convention)["curves"])
        console.print(f"plot: {write_png(figure, plot)}", highlight=False)
    if json_out is not None:
        console.print(f"wrote {div.write_diversity(json_out, curves, convention)}", highlight=False)


@app.command("select")
def select(
    file: Annotated[str, typer.Argument(help="Record file to select prompts (whole records) from.")],
    size: Annotated[int, typer.Option("--size", min=1, help="Number of records to keep.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file: .jsonl, .json or .parquet (records in selection order).")],
    by: Annotated[Literal["diversity", "random"], typer.Option(help="Greedy maximisation of D, or a seeded random draw.")] = "diversity",
    seed: Annotated[int, typer.Option(help="Seed (greedy: tie order; random: the draw and the comparison subsets).")] = 0,
    tokenizer: Annotated[str | None, typer.Option(help="Tokenizer directory or model (default: the embedded model's).")] = None,
    draws: Annotated[int, typer.Option(min=1, help="Random subsets of the same size to compare D with.")] = 20,
) -> None:
    """Pick `size` records whose prompts maximise D; report D against random subsets of the same size."""
    import statistics
    import time

    import numpy as np

    from personalign.curate import diversity as div
    from personalign.curate.ranking import pick_records
    from personalign.records.io import record_writer, write_records

    check_output_file(out, inputs=[file])
    record_writer(out, option="--out")
    prompts, tok = _prompts_and_tokenizer([file], tokenizer)
    bigrams = div.Bigrams.from_token_ids(div.tokenize(prompts[file], tok))
    if size > len(bigrams):
        raise typer.BadParameter(f"the file has {len(bigrams)} records, fewer than {size}", param_hint="--size")
    start = time.perf_counter()
    if by == "diversity":
        picked = div.select_diverse(bigrams, size, seed)
    else:
        picked = np.random.default_rng(seed).choice(len(bigrams), size, replace=False).tolist()
    seconds = time.perf_counter() - start
    write_records(pick_records(file, picked), out)
    chosen = div.diversity(bigrams, picked).d
    rand = [r.d for r in div.random_diversity(bigrams, size, draws, seed + 1)]
    console.print(f"selected {size} of {len(bigrams)} records by {by} in {seconds:.1f} s -> {out}\n"
                  f"D selected {chosen:.4f}; {draws} random subsets: mean {statistics.fmean(rand):.4f}, "
                  f"max {max(rand):.4f}; all {len(bigrams)}: {div.diversity(bigrams).d:.4f}", highlight=False)

"""`personalign data ...`: validate, stats, build-views, synth."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from personalign.cli._common import cli_errors, console

app = typer.Typer(no_args_is_help=True)


@app.command("build-views")
@cli_errors
def build_views(
    file: str = typer.Argument(..., help="Records: .jsonl, .json, .parquet, a save_to_disk directory, or a hub dataset."),
    out: Path = typer.Option(..., "--out", "-o", help="Output JSONL, one rendered example per line."),
    view: Literal["none", "ica", "pba", "persona", "demo"] = typer.Option("none", help="Conditioning view."),
    template: Literal["chat", "alignx", "alignx-eval", "plain"] = typer.Option("chat", help="Prompt template preset."),
    tokenizer: str | None = typer.Option(
        None,
        help="Tokenizer directory (AutoTokenizer.from_pretrained) for the chat template and --max-length. "
        "Without it nothing is truncated and the chat preset is written as ChatML.",
    ),
    max_length: int | None = typer.Option(
        None, min=1, help="Token budget: prompt + longest response + EOS (needs --tokenizer)."
    ),
    sample_history: bool = typer.Option(
        False, "--sample-history/--all-history", help="AlignX training-style sampling, or all history (evaluation)."
    ),
    seed: int = typer.Option(0, help="Seed for --sample-history."),
    include_demographic: bool = typer.Option(False, help="ica: append the demographic text (always in alignx-eval)."),
    persona_source: Literal["chosen", "gold", "rejected", "retrieved", "retrieved_rejected"] = typer.Option(
        "chosen", help="persona: which persona text to use."
    ),
    dimensions: Path | None = typer.Option(
        None, help="Preference dimension table (default: shared/data/alignx_dimensions.json)."
    ),
    on_invalid: Literal["fail", "skip"] = typer.Option("fail", help="Stop at the first invalid record, or skip them."),
    rejects: Path | None = typer.Option(None, help="With --on-invalid skip: write skipped records to this JSONL file."),
) -> None:
    """Render records into prompts under a view and template, one JSON object per example."""
    from dataclasses import fields

    from pydantic import ValidationError
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from personalign.config import ConfigError
    from personalign.data.io import ReadCounts, read_examples, write_jsonl
    from personalign.data.views import ViewConfig, ViewCounts, render_views

    if max_length is not None and tokenizer is None:
        raise typer.BadParameter("--max-length needs --tokenizer to count tokens", param_hint="--max-length")
    try:
        cfg = ViewConfig(
            view=view, template=template, sample_history=sample_history, seed=seed,
            include_demographic=include_demographic, persona_source=persona_source, max_length=max_length,
            dimensions=str(dimensions) if dimensions else None,
        )
    except ValidationError as e:
        raise ConfigError("; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())) from None
    tok = None
    if tokenizer is not None:
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(tokenizer)
        except (OSError, ValueError) as e:
            raise typer.BadParameter(f"cannot load tokenizer {tokenizer!r}: {e}", param_hint="--tokenizer") from None

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

        write_jsonl(rows(), out)

    table = Table(title=f"build-views: {cfg.view} / {cfg.template} -> {out}")
    table.add_column("count")
    table.add_column("value", justify="right")
    table.add_row("records skipped (invalid)", str(read.rejected))
    for key, value in counts.summary().items():
        table.add_row(key.replace("_", " "), str(value))
    console.print(table)


@app.command("synth")
@cli_errors
def synth(
    n: int = typer.Option(1000, "--n", min=1, help="Number of records."),
    out: Path = typer.Option(..., "--out", "-o", help="Output file: .jsonl, .json or .parquet."),
    seed: int = typer.Option(0, help="Random seed (the output is a function of the seed)."),
    kind: Literal["alignx", "ranking"] = typer.Option("alignx", help="AlignX user-level pairs, or ranking records."),
    k: int = typer.Option(4, "--k", min=2, help="ranking: responses per prompt."),
) -> None:
    """Write synthetic records whose preferred reply depends on the user's history."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from personalign.data.io import write_json, write_jsonl, write_parquet
    from personalign.data.synth import synth_ranking, synth_records

    writers = {".jsonl": write_jsonl, ".ndjson": write_jsonl, ".json": write_json, ".parquet": write_parquet}
    writer = writers.get(out.suffix.lower())
    if writer is None:
        raise typer.BadParameter(f"cannot write '{out.suffix}' files; use .jsonl, .json or .parquet", param_hint="--out")
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


@app.command("stats")
@cli_errors
def stats(
    file: str = typer.Argument(..., help="Records: .jsonl, .json, .parquet, a save_to_disk directory, or a hub dataset."),
    tokenizer: str | None = typer.Option(None, help="Tokenizer directory (AutoTokenizer.from_pretrained): adds token lengths."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the statistics to this JSON file."),
    top: int = typer.Option(10, min=0, help="How many of the most used preference dimensions to show."),
    on_invalid: Literal["fail", "skip"] = typer.Option("fail", help="Stop at the first invalid record, or skip invalid records."),
) -> None:
    """Lengths, history sizes, user signals, slices and preference-dimension usage of a data file."""
    import json

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from personalign.data.io import ReadCounts, read_examples
    from personalign.data.stats import compute_stats

    tok = None
    if tokenizer is not None:
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(tokenizer)
        except (OSError, ValueError) as e:
            raise typer.BadParameter(f"cannot load tokenizer {tokenizer!r}: {e}", param_hint="--tokenizer") from None
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
        cells = [f"{x.p5} / {x.p50} / {x.p95} / {x.max}, {x.mean:.0f}" for x in (c, *(s.tokens and [s.tokens[f]] or []))]
        lengths.add_row(f, *cells)
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
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(s.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        console.print(f"wrote {json_out}", highlight=False)


@app.command("validate")
@cli_errors
def validate(
    file: str = typer.Argument(..., help="Records: .jsonl, .json, .parquet, a save_to_disk directory, or a hub dataset name[:split]."),
    on_invalid: Literal["fail", "skip"] = typer.Option("fail", help="Stop at the first invalid record (exit 2), or skip and count them."),
    rejects: Path | None = typer.Option(
        None, help="With --on-invalid skip: JSONL of rejected records (default: FILE stem + .rejects.jsonl next to FILE)."
    ),
) -> None:
    """Check every record against its format; report accepted and rejected counts."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table
    from rich.text import Text

    from personalign.data.io import default_rejects_path, validate_file

    rejects_path = (rejects or default_rejects_path(file)) if on_invalid == "skip" else None
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

"""The quickstart pipeline: synthetic + P-Soups data -> validate -> stats -> views -> score.

Everything runs offline on the embedded default model; outputs go under `out_dir`.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from personalign.config import StrictModel
from personalign.data.dimensions import shared_data_dir
from personalign.data.io import ReadCounts, read_examples, write_jsonl
from personalign.data.schema import Example
from personalign.data.stats import compute_stats
from personalign.data.synth import synth_records
from personalign.data.views import ViewConfig, build_view

SIZES = {"tiny": {"synth": 24, "psoups": 8}, "default": {"synth": 200, "psoups": 50}}
SHOW_CHARS = 900


class QuickstartConfig(StrictModel):
    out_dir: str = "runs/quickstart"
    size: Literal["tiny", "default"] = "default"
    model: str | None = None
    seed: int = 0


@dataclass
class QuickstartResult:
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    counts: dict[str, ReadCounts] = field(default_factory=dict)
    scores: dict[str, tuple[float, float]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def _stage(console: Console, result: QuickstartResult, name: str):
    """Context manager printing a stage header and recording its wall time."""

    class _Timer:
        def __enter__(self):
            console.rule(f"[bold]{name}")
            self.t0 = time.perf_counter()

        def __exit__(self, *exc):
            result.timings[name] = time.perf_counter() - self.t0

    return _Timer()


def _show(console: Console, title: str, text: str) -> None:
    shown = text if len(text) <= SHOW_CHARS else text[:SHOW_CHARS] + f"\n… ({len(text) - SHOW_CHARS} more characters)"
    console.print(Panel(Text(shown), title=title, title_align="left", border_style="cyan"))


def _write_data(cfg: QuickstartConfig, out: Path, result: QuickstartResult) -> None:
    sizes = SIZES[cfg.size]
    synth = out / "data" / "synth.jsonl"
    write_jsonl(synth_records(sizes["synth"], seed=cfg.seed), synth)
    result.files["synth"] = synth
    shared = shared_data_dir()
    if shared is not None:
        src = shared / "p-soups" / "friendly_unfriendly.json"
        psoups = out / "data" / "p-soups-slice.jsonl"
        records = json.loads(src.read_text(encoding="utf-8"))[: sizes["psoups"]]
        write_jsonl(records, psoups)
        result.files["p-soups"] = psoups


def _validate(console: Console, result: QuickstartResult) -> dict[str, list[Example]]:
    loaded = {}
    table = Table("file", "accepted", "rejected", "rejects file")
    for name in ("synth", "p-soups"):
        if name not in result.files:
            continue
        path, counts = result.files[name], ReadCounts()
        rejects = path.with_suffix(".rejects.jsonl")
        loaded[name] = list(read_examples(path, on_invalid="skip", rejects_path=rejects, counts=counts))
        result.counts[name] = counts
        table.add_row(str(path), str(counts.accepted), str(counts.rejected), str(rejects) if counts.rejected else "-")
    console.print(table)
    return loaded


def _stats(console: Console, examples: list[Example], tokenizer) -> None:
    s = compute_stats(examples, tokenizer)
    table = Table("field", "chars p50 / p95", "tokens p50 / p95", title=f"{s.records} synthetic records")
    for f, c in s.chars.items():
        t = s.tokens[f] if s.tokens else None
        table.add_row(f, f"{c.p50} / {c.p95}", f"{t.p50} / {t.p95}" if t else "-")
    console.print(table)
    used = ", ".join(f"{d.positive if d.ones >= d.zeros else d.negative} ({d.used})" for d in s.dimensions[:5])
    console.print(f"history per record: UGC {dict(sorted(s.ugc_per_record.items()))}, "
                  f"pairs {dict(sorted(s.pairs_per_record.items()))}; most used dimensions: {used}")


def run_quickstart(cfg: QuickstartConfig, console: Console | None = None) -> QuickstartResult:
    """Run the pipeline and return what it wrote and measured."""
    from personalign.models.loading import load_model
    from personalign.models.logprobs import score_responses

    console = console or Console()
    out = Path(cfg.out_dir)
    result = QuickstartResult(out)
    with _stage(console, result, "1. data: synthesize AlignX users + a P-Soups slice"):
        _write_data(cfg, out, result)
        for name, path in result.files.items():
            console.print(f"{name}: {path}")
    with _stage(console, result, "2. validate"):
        loaded = _validate(console, result)
    with _stage(console, result, "3. model: load the embedded SmolLM2-135M-Instruct"):
        model, tokenizer = load_model(cfg.model)
        console.print(f"{type(model).__name__}, {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters")
    with _stage(console, result, "4. stats"):
        _stats(console, loaded["synth"], tokenizer)
    rendered = {}
    with _stage(console, result, "5. views: one rendered example of each"):
        synth_ex = loaded["synth"][0]
        persona_ex = loaded["p-soups"][0] if "p-soups" in loaded else None
        for view in ("none", "ica", "pba", "persona", "demo"):
            ex = persona_ex if view == "persona" else synth_ex
            if ex is None:
                console.print("[yellow]persona view skipped: P-Soups data not found[/]")
                continue
            r = build_view(ex, ViewConfig(view=view, max_length=1024), tokenizer)
            rendered[view] = r
            _show(console, f"view {view} · {ex.source}", r.prompt)
    with _stage(console, result, "6. score: log p(chosen) vs log p(rejected) for one example"):
        items = [(rendered[v].prompt, rendered[v].responses) for v in ("none", "ica")]
        for view, s in zip(("none", "ica"), score_responses(model, tokenizer, items, progress=False)):
            result.scores[view] = (s.logp[0], s.logp[1])
        table = Table("view", "log p(chosen)", "log p(rejected)", "prefers", title=synth_ex.source)
        for view, (c, r) in result.scores.items():
            table.add_row(view, f"{c:.2f}", f"{r:.2f}", "chosen" if c > r else "rejected")
        console.print(table)
    summary = Table("stage", "seconds", title="quickstart summary")
    for name, secs in result.timings.items():
        summary.add_row(name, f"{secs:.1f}")
    console.print(summary)
    console.print(f"outputs in {out}")
    return result



"""The quickstart: the whole method on bundled data and the embedded model, offline.

data (synthetic AlignX users + a P-Soups slice) -> validate -> user models (the headline: a learned
user model against one reward for everyone, on the same held-out users) -> stats -> views -> persona
inference -> LoRA DPO on the ICA view (reference log-probs cached once) -> alignment accuracy
before/after on held-out users -> personalized generations -> HTML report. Every stage writes under
`out_dir`.
"""
from __future__ import annotations

import gc
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from personalign.config import StrictModel
from personalign.curate.stats import compute_stats
from personalign.curate.synth import synth_records
from personalign.errors import require_extra
from personalign.files import check_output_dir, write_json
from personalign.models.loading import check_model_dir
from personalign.records.dimensions import shared_data_dir
from personalign.records.io import ReadCounts, read_examples, write_jsonl
from personalign.records.schema import Example
from personalign.views.build import ViewConfig, build_view

SHOW_CHARS = 700


class QuickstartSize(StrictModel):
    """How much work each stage does."""

    train_users: int
    heldout_users: int
    persona_records: int
    steps: int
    batch: int
    max_length: int
    generations: int
    new_tokens: int
    user_model_train: int  # synthetic users the user models learn from
    user_model_heldout: int  # unseen users of the headline
    user_model_steps: int


# Memory: a packed batch's attention grows with the square of its tokens, so the quickstart trains one
# record per micro-batch (the same optimizer steps through accumulation) and scores 2048 tokens at a time.
SCORING_TOKENS = 2048

SIZES = {
    "tiny": QuickstartSize(train_users=8, heldout_users=6, persona_records=2, steps=2, batch=2, max_length=320,
                           generations=2, new_tokens=16, user_model_train=60, user_model_heldout=60,
                           user_model_steps=300),
    "default": QuickstartSize(train_users=24, heldout_users=16, persona_records=4, steps=6, batch=4, max_length=320,
                              generations=4, new_tokens=32, user_model_train=120, user_model_heldout=100,
                              user_model_steps=800),
}


QuickstartSize = Literal["tiny", "default"]


class QuickstartConfig(StrictModel):
    out_dir: str = "runs/quickstart"
    size: QuickstartSize = "default"
    overwrite: bool = False  # run in a directory that holds files the quickstart did not write
    model: str | None = None
    seed: int = 0


QUICKSTART_OUTPUTS = ("data", "personas", "accuracy-*", "train", "generations-*", "report.html", "report.md",
                      "user-models", "headline.json")
HEADLINE_SHOTS = 4


@dataclass
class QuickstartResult:
    out_dir: Path
    report: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)
    counts: dict[str, ReadCounts] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    peak_rss_gb: dict[str, float] = field(default_factory=dict)  # this process's peak RSS at the end of each stage


def peak_rss_gb() -> float:
    """This process's peak resident set size so far, in GB (ru_maxrss: KiB on Linux, bytes on macOS; NaN
    where there is no `resource` module)."""
    try:
        import resource
    except ImportError:
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 30 if sys.platform == "darwin" else 1 << 20)


@contextmanager
def _stage(console: Console, result: QuickstartResult, name: str) -> Iterator[None]:
    console.rule(f"[bold]{name}")
    t0 = time.perf_counter()
    yield
    result.timings[name] = time.perf_counter() - t0
    result.peak_rss_gb[name] = peak_rss_gb()
    console.print(f"[dim]{name}: {result.timings[name]:.1f} s, peak RSS so far {result.peak_rss_gb[name]:.2f} GB[/]")


def _show(console: Console, title: str, text: str) -> None:
    shown = text if len(text) <= SHOW_CHARS else text[:SHOW_CHARS] + f"\n… ({len(text) - SHOW_CHARS} more characters)"
    console.print(Panel(Text(shown), title=title, title_align="left", border_style="cyan"))


def _write_data(cfg: QuickstartConfig, size: QuickstartSize, out: Path, result: QuickstartResult) -> None:
    data = out / "data"
    result.files["train"] = data / "synth-train.jsonl"
    result.files["heldout"] = data / "synth-heldout.jsonl"
    write_jsonl(synth_records(size.train_users, seed=cfg.seed), result.files["train"])
    write_jsonl(synth_records(size.heldout_users, seed=cfg.seed + 10_000), result.files["heldout"])
    result.files["users-train"] = data / "users-train.jsonl"
    result.files["users-heldout"] = data / "users-heldout.jsonl"
    write_jsonl(synth_records(size.user_model_train, seed=cfg.seed + 20_000), result.files["users-train"])
    write_jsonl(synth_records(size.user_model_heldout, seed=cfg.seed + 30_000), result.files["users-heldout"])
    shared = shared_data_dir()
    if shared is not None:
        records = json.loads((shared / "p-soups" / "friendly_unfriendly.json").read_text(encoding="utf-8"))
        result.files["p-soups"] = data / "p-soups-slice.jsonl"
        write_jsonl(records[: size.persona_records], result.files["p-soups"])


def _validate(console: Console, result: QuickstartResult) -> dict[str, list[Example]]:
    loaded = {}
    table = Table("file", "accepted", "rejected")
    for name, path in result.files.items():
        counts = ReadCounts()
        loaded[name] = list(read_examples(path, on_invalid="skip", rejects_path=path.with_suffix(".rejects.jsonl"),
                                          counts=counts))
        result.counts[name] = counts
        table.add_row(str(path), str(counts.accepted), str(counts.rejected))
    console.print(table)
    return loaded


def _stats_and_views(console: Console, loaded: dict[str, list[Example]], tokenizer, max_length: int) -> None:
    s = compute_stats(loaded["train"], tokenizer)
    table = Table("field", "chars p50 / p95", "tokens p50 / p95", title=f"{s.records} training users")
    for f, c in s.chars.items():
        t = s.tokens[f]
        table.add_row(f, f"{c.p50} / {c.p95}", f"{t.p50} / {t.p95}")
    console.print(table)
    ex = loaded["train"][0]
    for view in ("ica", "pba"):
        r = build_view(ex, ViewConfig(view=view, max_length=max_length), tokenizer)
        _show(console, f"view {view} · {ex.source} · {r.history_dropped} history items dropped to fit", r.prompt)


def _personas(console: Console, result: QuickstartResult, backend, size: QuickstartSize) -> None:
    from personalign.llm.base import GenerationConfig
    from personalign.persona.infer import infer_personas
    from personalign.persona.saliency import personas_by_side, word_saliency, write_saliency

    out = result.out_dir / "personas" / "personas.jsonl"
    stats = infer_personas(result.files["p-soups"], backend, out,
                           gen_config=GenerationConfig(max_new_tokens=size.new_tokens + 16))
    inferred = list(read_examples(out))
    for ex in inferred:
        console.print(Text(f"{ex.source}\n  chosen:   {ex.user.personas.get('chosen_persona')}\n"
                           f"  rejected: {ex.user.personas.get('rejected_persona')}"))
    saliency = word_saliency(personas_by_side(inferred), cutoff=1)
    write_saliency(out.parent / "saliency.json", saliency)
    console.print(f"{stats.generated} personas generated, {stats.reused} reused from the cache -> {out}")


def _accuracy(result: QuickstartResult, name: str, policy: str | None, reference: str | None,
              size: QuickstartSize, model: str | None):
    from personalign.eval.alignment import AccuracyConfig, evaluate_accuracy, write_accuracy

    cfg = AccuracyConfig(data=str(result.files["heldout"]), policy=policy or model, reference=reference,
                         view=ViewConfig(view="ica"), max_length=size.max_length, n_boot=500,
                         max_tokens_per_batch=SCORING_TOKENS)
    res = evaluate_accuracy(cfg)
    write_accuracy(res, result.out_dir / name)
    result.accuracy[name] = res.estimates["overall"].value
    return res


def _compare(result: QuickstartResult, before, after) -> dict:
    """The same metric before and after training (raw log-prob accuracy of base and trained policy on
    the same held-out pairs), the paired difference with its 95% interval, and the alignment accuracy."""
    from personalign.eval.alignment import correct_pairs, raw_view_of, write_accuracy
    from personalign.metrics import paired_difference

    after_raw = raw_view_of(after, n_boot=500)
    write_accuracy(after_raw, result.out_dir / "accuracy-after-raw")
    diff = paired_difference(correct_pairs(after_raw), correct_pairs(before), n_boot=1000)
    comparison = {
        "metric": "raw log-prob accuracy: logp(chosen) > logp(rejected), same held-out pairs",
        "before": before.estimates["overall"].as_dict(), "after": after_raw.estimates["overall"].as_dict(),
        "difference": diff.as_dict(),
        "alignment_accuracy_after": {"metric": "alignment accuracy: trained policy's margin over the base > 0",
                                     **after.estimates["overall"].as_dict()},
    }
    write_json(result.out_dir / "accuracy-comparison.json", comparison)
    result.accuracy["accuracy-after-raw"] = after_raw.estimates["overall"].value
    return comparison


def _user_models(console: Console, result: QuickstartResult, size: QuickstartSize, seed: int) -> dict:
    """The headline: `latent` (a learned user model, adapted to each held-out user from its 4 past
    pairs and its own texts) against `bt` (one reward for everyone) on the same held-out users, with
    the paired difference and its 95% interval; written to `headline.json`."""
    from personalign.metrics import paired_difference
    from personalign.users.evaluate import UsersEvalConfig, evaluate_user_model, write_users_accuracy
    from personalign.users.train import UsersTrainConfig, train_user_model

    root = result.out_dir / "user-models"
    per_user = {}
    for rep in ("bt", "latent"):
        model_dir = root / rep
        train_user_model(UsersTrainConfig(data=str(result.files["users-train"]), out=str(model_dir), representation=rep,
                                          fit={"max_steps": size.user_model_steps, "seed": seed}), progress=True)
        ecfg = UsersEvalConfig(model=str(model_dir), data=str(result.files["users-heldout"]),
                               out=str(root / f"accuracy-{rep}"), shots=[0, 1, 2, HEADLINE_SHOTS])
        evaluated = evaluate_user_model(ecfg, progress=False)
        write_users_accuracy(evaluated, ecfg)
        last = evaluated.curve[-1]
        per_user[rep] = ({u: c / n for u, c, n in last.per_user}, last.overall)
    users = sorted(per_user["latent"][0])
    diff = paired_difference([per_user["latent"][0][u] for u in users], [per_user["bt"][0][u] for u in users],
                             n_boot=2000, seed=seed)
    headline = {"metric": f"pairwise accuracy on held-out users after {HEADLINE_SHOTS} shots (user model: r_u(chosen) "
                          "> r_u(rejected))",
                "personalized": {"representation": "latent", **per_user["latent"][1].as_dict()},
                "unpersonalized": {"representation": "bt", **per_user["bt"][1].as_dict()},
                "difference": diff.value, "ci": [diff.low, diff.high], "n": diff.n}
    write_json(result.out_dir / "headline.json", headline)
    console.print(escape(_headline_line(headline)), highlight=False)
    return headline


def _headline_line(h: dict) -> str:
    return (f"personalized (latent user model) vs unpersonalized (bt) on {h['n']} held-out users: "
            f"{h['personalized']['value']:.3f} vs {h['unpersonalized']['value']:.3f}; paired Δ {h['difference']:+.3f} "
            f"[{h['ci'][0]:+.3f}, {h['ci'][1]:+.3f}] (95%)")


def _train(result: QuickstartResult, size: QuickstartSize, cfg: QuickstartConfig):
    from personalign.models.lora import LoraSettings
    from personalign.train.config import TrainConfig
    from personalign.train.loop import train

    tcfg = TrainConfig(
        model=cfg.model, data=str(result.files["train"]), view=ViewConfig(view="ica", sample_history=True),
        loss="dpo", beta=0.1, learning_rate=5e-4, per_device_train_batch_size=1, gradient_accumulation_steps=size.batch,
        max_tokens_per_batch=SCORING_TOKENS, max_steps=size.steps,
        max_length=size.max_length, lr_scheduler_type="cosine", warmup_ratio=0.0, logging_steps=1,
        save_steps=size.steps, eval_steps=size.steps, lora=LoraSettings(r=16, lora_alpha=32, lora_dropout=0.0),
        output_dir=str(result.out_dir / "train"), seed=cfg.seed, report_to="tensorboard",
    )
    return train(tcfg)


def _generate(result: QuickstartResult, size: QuickstartSize, name: str, view: str, backend) -> None:
    from personalign.eval.generate import GenerateConfig, generate_responses
    from personalign.llm.base import GenerationConfig

    gcfg = GenerateConfig(data=str(result.files["heldout"]), out=str(result.out_dir / name),
                          view=ViewConfig(view=view, max_length=size.max_length), limit=size.generations,
                          generation=GenerationConfig(max_new_tokens=size.new_tokens))
    generate_responses(gcfg, backend)


def run_quickstart(cfg: QuickstartConfig, console: Console | None = None) -> QuickstartResult:
    """Run every stage; returns what was written and measured."""
    require_extra("report", "the quickstart's report")
    from personalign.llm.local import LocalBackend
    from personalign.models.loading import load_model, resolve_model
    from personalign.report.html import build_report

    console = console or Console()
    size = SIZES[cfg.size]
    check_model_dir(cfg.model, option="--model")
    check_output_dir(cfg.out_dir, own=QUICKSTART_OUTPUTS, overwrite=cfg.overwrite)
    result = QuickstartResult(Path(cfg.out_dir))
    with _stage(console, result, "1. data: synthetic AlignX users + a P-Soups slice"):
        _write_data(cfg, size, result.out_dir, result)
    with _stage(console, result, "2. validate"):
        loaded = _validate(console, result)
    with _stage(console, result, "3. user models: learned per user vs one reward for everyone (held-out users)"):
        headline = _user_models(console, result, size, cfg.seed)
    with _stage(console, result, "3b. model: the embedded SmolLM2-135M-Instruct"):
        base_path = resolve_model(cfg.model)
        model, tokenizer = load_model(base_path)
        base = LocalBackend(model, tokenizer, batch_size=8)
        console.print(f"{type(model).__name__}, {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters")
    with _stage(console, result, "4. stats and views (ICA, PBA)"):
        _stats_and_views(console, loaded, tokenizer, size.max_length)
    if "p-soups" in result.files:
        with _stage(console, result, "5. persona inference (P-Soups slice)"):
            _personas(console, result, base, size)
    else:
        console.print("[yellow]P-Soups data not found: persona inference skipped[/]")
    del base, model  # each later stage loads what it needs: one model at a time keeps the peak low
    gc.collect()
    with _stage(console, result, "6. accuracy before training (held-out users, ICA view)"):
        before = _accuracy(result, "accuracy-before", None, None, size, base_path)
        console.print(f"raw log-prob accuracy of the base model: {before.estimates['overall'].value:.3f}")
    with _stage(console, result, "7. LoRA DPO on the ICA view (reference log-probs cached)"):
        trained = _train(result, size, cfg)
        console.print(f"{trained.global_step} steps; adapter in {trained.final_dir}")
        final_dir = trained.final_dir
        del trained
        gc.collect()
    with _stage(console, result, "8. accuracy after training (held-out users, ICA view)"):
        after = _accuracy(result, "accuracy-after", str(final_dir), base_path, size, base_path)
        comparison = _compare(result, before, after)
        console.print(f"alignment accuracy of the trained policy over the base: {after.estimates['overall'].value:.3f}")
    with _stage(console, result, "9. generations: base (no view) vs personalized (ICA)"):
        _generate(result, size, "generations-base", "none", LocalBackend(*load_model(base_path), batch_size=8))
        gc.collect()
        tuned = LocalBackend(*load_model(str(final_dir)), batch_size=8, name=str(final_dir))  # base + the adapter
        _generate(result, size, "generations-personalized", "ica", tuned)
    with _stage(console, result, "10. report"):
        result.report = build_report([result.out_dir], result.out_dir / "report.html", title="personalign quickstart")
    summary = Table("stage", "seconds", "peak RSS so far (GB)", title="quickstart summary")
    for name, secs in result.timings.items():
        summary.add_row(name, f"{secs:.1f}", f"{result.peak_rss_gb[name]:.2f}")
    console.print(summary)
    b, a, d = comparison["before"], comparison["after"], comparison["difference"]
    console.print(Text("headline: " + _headline_line(headline), style="bold"), highlight=False)
    null = "" if d["low"] > 0 or d["high"] < 0 else (" — a null result at this size: the interval includes 0 (a "
                                                      "policy learns to read user history at the papers' scale)")
    console.print(escape(f"raw log-prob accuracy, base → trained: {b['value']:.3f} → {a['value']:.3f}; paired "
                         f"Δ {d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] (95%, n={d['n']}){null}"),
                  highlight=False)
    console.print(f"alignment accuracy, trained over base: {comparison['alignment_accuracy_after']['value']:.3f}",
                  highlight=False)
    console.print(f"report: [bold]{result.report}[/]")
    return result

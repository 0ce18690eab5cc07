"""The report's plots: matplotlib figures (no pyplot state) rendered to PNG `data:` URIs for the
report, or to PNG files (`write_png`) for commands that draw one on their own."""
from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from personalign.files import write_bytes

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
SPLIT_COLORS = {"train": COLORS[0], "eval": COLORS[1]}
OUTCOME_COLORS = {"win": "#2ca02c", "tie": "#bdbdbd", "loss": "#d62728"}
SKIPPED_METRICS = frozenset({"epoch", "samples_per_second", "tokens_per_second", "peak_memory_gib"})
METRIC_ORDER = ("loss", "accuracy", "rewards/accuracies", "rewards/margins", "pro/accuracy", "grad_norm",
                "learning_rate")
MAX_PANELS = 6


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def to_data_uri(fig: Figure) -> str:
    """The figure as a base64 PNG data URI."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(fig)).decode("ascii")


def write_png(fig: Figure, path: str | os.PathLike) -> Path:
    """Write the figure as a PNG file (atomically)."""
    return write_bytes(path, png_bytes(fig, dpi=120))


def _short(label: str, width: int = 40) -> str:
    return label if len(label) <= width else "…" + label[-(width - 1):]


def shots_plot(series: Sequence[tuple[str, list[dict]]]) -> str:
    """User-model accuracy vs shots with 95% intervals, one line per (label, [{shots, accuracy, ci}])."""
    fig = Figure(layout="constrained", figsize=(6.5, 4.0))
    ax = fig.subplots()
    for k, (label, curve) in enumerate(series):
        xs = [c["shots"] for c in curve]
        ys = [c["accuracy"] for c in curve]
        errors = [[max(0.0, c["accuracy"] - c["ci"][0]) for c in curve], [max(0.0, c["ci"][1] - c["accuracy"]) for c in curve]]
        ax.errorbar(xs, ys, yerr=errors, fmt="-o", capsize=4, color=COLORS[k % len(COLORS)], label=_short(label))
    ax.axhline(0.5, color="#999999", lw=0.8, ls="--")
    ax.set_xlabel("shots (pairs the user gave)")
    ax.set_ylabel("accuracy on the user's next pairs")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="lower right")
    return to_data_uri(fig)


def accuracy_plot(series: Sequence[tuple[str, dict]]) -> str:
    """Accuracy by slice with 95% intervals, one series per (label, {slice: {value, low, high, n}})."""
    slices = list(dict.fromkeys(s for _, acc in series for s in acc))
    fig = Figure(layout="constrained", figsize=(max(6.0, 1.3 * len(slices) + 2), 4.0))
    ax = fig.subplots()
    width = 0.8 / max(len(series), 1)
    for k, (label, acc) in enumerate(series):
        xs = [i - 0.4 + width * (k + 0.5) for i, s in enumerate(slices) if s in acc]
        est = [acc[s] for s in slices if s in acc]
        values = [e["value"] for e in est]
        errors = [[max(0.0, e["value"] - e["low"]) for e in est], [max(0.0, e["high"] - e["value"]) for e in est]]
        ax.errorbar(xs, values, yerr=errors, fmt="o", capsize=4, color=COLORS[k % len(COLORS)], label=_short(label))
    ax.axhline(0.5, color="#999999", lw=0.8, ls="--")
    ax.set_xticks(range(len(slices)), slices)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_title("Alignment accuracy by slice")
    ax.legend(fontsize=8, loc="lower right")
    return to_data_uri(fig)


def _stacked_shares(bars: Sequence[tuple[str, dict[str, float]]], colors: dict[str, str], names: dict[str, str],
                    *, xlabel: str, title: str, notes: Sequence[str] = ()) -> str:
    """Horizontal bars of stacked shares (one per (label, {part: share})), parts in `colors` order, shares
    of 8% or more written on the bar, an optional note right of each bar."""
    fig = Figure(layout="constrained", figsize=(8.0, 0.6 * len(bars) + 1.4))
    ax = fig.subplots()
    for y, (_, shares) in enumerate(bars):
        left = 0.0
        for part, color in colors.items():
            share = shares.get(part, 0.0)
            ax.barh(y, share, left=left, color=color, label=names[part] if y == 0 else None)
            if share >= 0.08:
                ax.text(left + share / 2, y, f"{share:.0%}", ha="center", va="center", fontsize=8)
            left += share
        if y < len(notes):
            ax.text(1.01, y, notes[y], va="center", fontsize=8)
    ax.set_yticks(range(len(bars)), [_short(label, 50) for label, _ in bars], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(ncol=3, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    return to_data_uri(fig)


def win_rate_plot(bars: Sequence[tuple[str, dict]]) -> str:
    """Stacked win / tie / loss shares, one bar per (label, rubric dict of judge.json)."""
    shares = [(label, r["rates"] if r["n"] else {}) for label, r in bars]
    notes = ["WR n/a" if (wr := r["win_rate"]["value"]) is None or math.isnan(wr) else f"WR {wr:.2f}" for _, r in bars]
    return _stacked_shares(shares, OUTCOME_COLORS, {k: k for k in OUTCOME_COLORS}, notes=notes,
                           xlabel="share of pairs (test vs. base)", title="Pairwise judge: wins, ties, losses")


def persona_accuracy_plot(series: Sequence[tuple[str, dict]]) -> str:
    """Persona accuracy with its 95% interval, one bar per (label, `persona accuracy --out` JSON): the
    persona-tailoring paper's figure 3 (does a judge pick each persona's response?); 0.5 is chance."""
    fig = Figure(layout="constrained", figsize=(8.0, 0.5 * len(series) + 1.6))
    ax = fig.subplots()
    for y, (label, d) in enumerate(series):
        e = d["accuracy"]
        ax.barh(y, e["value"], color=COLORS[y % len(COLORS)])
        ax.errorbar(e["value"], y, xerr=[[max(0.0, e["value"] - e["low"])], [max(0.0, e["high"] - e["value"])]],
                    fmt="none", ecolor="#333333", capsize=4)
        ax.text(1.01, y, f"{e['value']:.2f} (n {d.get('n_personas', '?')})", va="center", fontsize=8)
    ax.axvline(0.5, color="#999999", lw=0.8, ls="--")
    ax.set_yticks(range(len(series)), [_short(label, 50) for label, _ in series], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("persona accuracy (95% CI; 0.5 = chance)")
    ax.set_title("Persona accuracy")
    return to_data_uri(fig)


def persona_preference_plot(bars: Sequence[tuple[str, dict]]) -> str:
    """Stacked shares of judges preferring the chosen persona, a tie, or the rejected one, one bar per
    (label, `persona prefer --out` JSON): the persona-tailoring paper's figure 4."""
    colors = {"chosen": OUTCOME_COLORS["win"], "tie": OUTCOME_COLORS["tie"], "rejected": OUTCOME_COLORS["loss"]}
    names = {"chosen": "chosen persona preferred", "tie": "tie", "rejected": "rejected persona preferred"}
    return _stacked_shares([(label, d["rates"] if d.get("n") else {}) for label, d in bars], colors, names,
                           xlabel="share of records", title="Persona preference: chosen vs. rejected persona")


def training_plot(label: str, rows: Sequence[dict]) -> str | None:
    """Panels of logged metrics against step; train/x and eval/x share the panel of x. None if nothing to plot."""
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for row in rows:
        step = row.get("step")
        for key, value in row.items():
            if key == "step" or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            split, _, name = key.partition("/") if "/" in key else ("train", "", key)
            if name in SKIPPED_METRICS or not isinstance(step, (int, float)):
                continue
            curves.setdefault(name, {}).setdefault(split, []).append((step, value))
    if not curves:
        return None
    names = sorted(curves, key=lambda n: (METRIC_ORDER.index(n) if n in METRIC_ORDER else len(METRIC_ORDER), n))
    names = names[:MAX_PANELS]
    cols = min(3, len(names))
    nrows = math.ceil(len(names) / cols)
    fig = Figure(layout="constrained", figsize=(4.2 * cols, 3.0 * nrows))
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        for k, (split, points) in enumerate(sorted(curves[name].items(), key=lambda kv: (kv[0] != "train", kv[0]))):
            xs, ys = zip(*sorted(points))
            color = SPLIT_COLORS.get(split) or COLORS[2 + k % (len(COLORS) - 2)]
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3, color=color, label=split)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.legend(fontsize=7)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    fig.suptitle(f"Training: {_short(label, 60)}")
    return to_data_uri(fig)


def saliency_plot(label: str, saliency: dict[str, list[dict]], top: int = 15) -> str:
    """Top words per persona label by saliency (count in brackets)."""
    labels = list(saliency)
    fig = Figure(layout="constrained", figsize=(4.5 * len(labels), 0.28 * top + 1.5))
    axes = fig.subplots(1, len(labels), squeeze=False).ravel()
    for k, (ax, name) in enumerate(zip(axes, labels)):
        rows = saliency[name][:top]
        ax.barh(range(len(rows)), [r["saliency"] for r in rows], color=COLORS[k % len(COLORS)])
        ax.set_yticks(range(len(rows)), [f"{r['word']} ({r['count']})" for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_title(f"{name} personas", fontsize=10)
        ax.set_xlabel("saliency = count(w, label) / count(w)", fontsize=8)
    fig.suptitle(f"Persona word saliency: {_short(label, 60)}")
    return to_data_uri(fig)


def diversity_plot(label: str, curves: dict[str, list[dict]]) -> str:
    """Prompt diversity D against the number of prompts, one line per curve, as a data URI."""
    return to_data_uri(diversity_figure(label, curves))


def diversity_figure(label: str, curves: dict[str, list[dict]]) -> Figure:
    """Prompt diversity D against the number of prompts (`{"n", "d"}` points), one line per curve."""
    fig = Figure(layout="constrained", figsize=(6.5, 4.0))
    ax = fig.subplots()
    for k, (name, points) in enumerate(curves.items()):
        pts = sorted((p["n"], p["d"]) for p in points)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, color=COLORS[k % len(COLORS)],
                label=_short(name))
    ax.set_xlabel("prompts N")
    ax.set_ylabel("D = √N · distinct / total bigrams")
    ax.set_title(f"Prompt diversity: {_short(label, 50)}")
    ax.legend(fontsize=8)
    return fig

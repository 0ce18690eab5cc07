"""The AlignX method at small scale: DPO on the `ica`, `pba` and `none` views of synthetic AlignX
users at the same budget, evaluated on held-out users with one metric and 95% intervals.

Metric: alignment accuracy under AlignX's protocol: each trained policy is scored under its own
view, the reference (the untrained embedded model) always under the ICA view with all history, so
the three policies share one reference and their numbers compare directly. Paired differences
(ica − none, pba − none, over the same held-out pairs) come with paired bootstrap intervals; the
raw log-prob accuracy of every model (base included) is reported alongside.

    python bench/study_alignx_synthetic.py --size cpu    # about an hour on a 2-core CPU
    python bench/study_alignx_synthetic.py --size gpu    # thousands of steps; for a GPU machine

Results: `runs/study-<size>/` (data, runs, accuracies, study.json) and, with `--write-results`,
`results/alignx-synthetic.md`.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

SIZES = {
    # users (train = steps × batch: one epoch), history items per user, steps, per-device batch,
    # max_length, learning rate, LoRA rank, bf16
    "smoke": dict(train=8, heldout=8, history=2, steps=2, batch=4, max_length=512, lr=5e-4, r=8, bf16=False),
    "cpu": dict(train=96, heldout=200, history=2, steps=24, batch=4, max_length=512, lr=5e-4, r=16, bf16=False),
    "gpu": dict(train=48000, heldout=2000, history=4, steps=3000, batch=16, max_length=2048, lr=2e-4, r=64,
                bf16=True),
}
VIEWS = ("ica", "pba", "none")


def rewrite(study_json: str) -> None:
    """Write results/alignx-synthetic.md again from a finished run's study.json (no training)."""
    study = json.loads(Path(study_json).read_text())
    Path("results/alignx-synthetic.md").write_text(markdown(study))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=SIZES, default="cpu")
    parser.add_argument("--out", default=None, help="Run directory (default runs/study-<size>).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-results", action="store_true", help="Write results/alignx-synthetic.md.")
    parser.add_argument("--rewrite", metavar="STUDY_JSON", help="Only rewrite the Markdown from a study.json.")
    args = parser.parse_args()
    if args.rewrite:
        rewrite(args.rewrite)
        return

    from personalign.curate.synth import synth_records
    from personalign.eval.alignment import AccuracyConfig, correct_pairs, evaluate_accuracy, raw_view_of, write_accuracy
    from personalign.metrics import paired_difference
    from personalign.models.loading import resolve_model
    from personalign.models.lora import LoraSettings
    from personalign.records.io import write_jsonl
    from personalign.train.config import TrainConfig
    from personalign.train.loop import train
    from personalign.views.build import ViewConfig

    size = SIZES[args.size]
    out = Path(args.out or f"runs/study-{args.size}")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    train_file, heldout_file = out / "train.jsonl", out / "heldout.jsonl"
    history = {"ugc_per_user": size["history"], "pairs_per_user": size["history"]}
    write_jsonl(synth_records(size["train"], seed=args.seed + 1, **history), train_file)
    write_jsonl(synth_records(size["heldout"], seed=args.seed + 2, **history), heldout_file)
    base = resolve_model(None)
    reference_view = ViewConfig(view="ica")

    results: dict[str, dict] = {}
    correct: dict[str, object] = {}
    for view in ("base", *VIEWS):
        t0 = time.perf_counter()
        if view == "base":
            acc = evaluate_accuracy(AccuracyConfig(data=str(heldout_file), policy=base, view=reference_view,
                                                   max_length=size["max_length"]))
            write_accuracy(acc, out / "accuracy-base")
            results["base"] = {"raw": acc.estimates["overall"].as_dict()}
            correct["base-raw"] = correct_pairs(acc)
            timings["base"] = time.perf_counter() - t0
            continue
        cfg = TrainConfig(
            model=None, data=str(train_file), view=ViewConfig(view=view, sample_history=True, seed=args.seed),
            loss="dpo", beta=0.1, learning_rate=size["lr"], per_device_train_batch_size=size["batch"],
            max_steps=size["steps"], max_length=size["max_length"], lr_scheduler_type="cosine", warmup_ratio=0.05,
            logging_steps=max(1, size["steps"] // 10), save_steps=size["steps"], eval_steps=size["steps"] + 1,
            lora=LoraSettings(r=size["r"], lora_alpha=2 * size["r"], lora_dropout=0.0), bf16=size["bf16"],
            output_dir=str(out / f"dpo-{view}"), seed=args.seed, report_to="none",
        )
        trained = train(cfg)
        timings[f"train-{view}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        acc = evaluate_accuracy(AccuracyConfig(
            data=str(heldout_file), policy=str(trained.final_dir), reference=base, view=ViewConfig(view=view),
            reference_view=reference_view, max_length=size["max_length"]))
        write_accuracy(acc, out / f"accuracy-{view}")
        raw = raw_view_of(acc)
        correct[view], correct[f"{view}-raw"] = correct_pairs(acc), correct_pairs(raw)
        results[view] = {"alignment": acc.estimates["overall"].as_dict(), "raw": raw.estimates["overall"].as_dict(),
                         "view_counts": {k: acc.counts[k] for k in ("no_profile", "truncated", "overlong")},
                         "final_train_loss": trained.train_metrics.get("train/loss"), "steps": trained.global_step}
        timings[f"eval-{view}"] = time.perf_counter() - t0
    differences = {f"{v} - none": paired_difference(correct[v], correct["none"]).as_dict() for v in ("ica", "pba")}
    study = {"size": args.size, "settings": size, "seed": args.seed, "results": results, "differences": differences,
             "timings_s": {k: round(v, 1) for k, v in timings.items()},
             "total_s": round(time.perf_counter() - started, 1),
             "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, Python {sys.version.split()[0]}",
             "command": f"bash bench/study_alignx_synthetic.sh {args.size}"}
    (out / "study.json").write_text(json.dumps(study, indent=2) + "\n")
    print(markdown(study))
    if args.write_results:
        Path("results").mkdir(exist_ok=True)
        Path("results/alignx-synthetic.md").write_text(markdown(study))
    best = max(VIEWS, key=lambda v: results[v]["alignment"]["value"])
    print(f"ratio={results['ica']['alignment']['value'] / max(results['none']['alignment']['value'], 1e-9):.3f} "
          f"best={best} total_s={study['total_s']}")


def markdown(study: dict) -> str:
    s, r = study["settings"], study["results"]
    ci = lambda e: f"{e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}]"  # noqa: E731
    lines = [
        f"# AlignX on synthetic users ({study['size']} size)", "",
        f"DPO (LoRA r {s['r']}, β 0.1, lr {s['lr']}, cosine, {s['steps']} steps × batch {s['batch']}, max_length "
        f"{s['max_length']}) of the embedded SmolLM2-135M-Instruct on {s['train']} synthetic AlignX users "
        f"(`data synth`, seed {study['seed'] + 1}, {s['history']} comments and {s['history']} past pairs per user), "
        f"once per view, same budget; evaluated on {s['heldout']} held-out users (seed {study['seed'] + 2}).", "",
        "**Metric**: alignment accuracy under AlignX's protocol (policy under its own view, the reference = "
        "the untrained model under the ICA view with all history; one reference for all rows), with bootstrap "
        "95% intervals. Raw log-prob accuracy (logp(chosen) > logp(rejected), no reference) alongside.", "",
        "| policy | alignment accuracy [95% CI] | raw log-prob accuracy [95% CI] | final train loss |",
        "|---|---|---|---:|",
        f"| untrained (ICA view) | — | {ci(r['base']['raw'])} | — |",
    ]
    for v in VIEWS:
        loss = r[v]["final_train_loss"]
        lines.append(f"| DPO on `{v}` | {ci(r[v]['alignment'])} | {ci(r[v]['raw'])} | "
                     f"{'—' if loss is None else f'{loss:.4f}'} |")
    lines += ["", "Paired differences in alignment accuracy (same held-out pairs, paired bootstrap 95%):", ""]
    for name, d in study["differences"].items():
        lines.append(f"- {name}: {d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] (n = {d['n']})")
    visible = [n for n, d in study["differences"].items() if d["low"] > 0 or d["high"] < 0]
    lines += ["", ("**Reading**: the intervals of " + ", ".join(visible) + " exclude 0." if visible else
                   "**Reading**: every paired interval includes 0: no effect of the conditioning is visible at this "
                   "size."), ""]
    if study["size"] != "gpu":
        lines += ["At the CPU size each policy sees 96 pairs once (24 LoRA steps), and the ICA prompts of 180 of "
                  "200 held-out users lose history items to fit 512 tokens: the policies barely move from the "
                  "untrained model (train loss near ln 2 for `pba` and `none`). Showing the effect needs the "
                  "conditioning to be learned: the `gpu` size (48,000 users with 4 comments and 4 past pairs each, "
                  "3,000 steps × batch 16 = 48,000 pairs, max_length 2048 so no history is cut, 2,000 held-out "
                  "users for intervals of about ±0.02) is about 500× this budget, which is the order of "
                  "magnitude at which the AlignX paper's gains appear (it trains on 1.3M records).", ""]
    lines += ["View counts on the held-out set: " + "; ".join(
        f"`{v}` {r[v]['view_counts']}" for v in VIEWS), "",
        f"Time: {study['total_s'] / 60:.1f} min ({study['machine']}); per stage (s): {study['timings_s']}.", "",
        f"Command: `{study['command']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""Personalized reward models at small scale: a reward model (`loss: rm`) trained on the `ica` view
of synthetic AlignX users and one on the `none` view, at the same budget, evaluated on held-out
users (`eval rm`: the preferred response rewarded above the other) with 95% intervals and the
paired difference (ica − none over the same held-out pairs).

Both start from the embedded SmolLM2-135M-Instruct with a fresh score head and LoRA adapters
(the head trained whole); same records, steps, batch, learning rate and seed.

    python bench/study_rm_views.py --size cpu     # about 15 minutes on a 2-core CPU
    python bench/study_rm_views.py --size smoke   # a minute: checks the script runs

Results: `runs/study-rm-<size>/` (data, runs, rm.json per view, study.json). The last line reads
`ratio=<ica accuracy / none accuracy> ica=... none=... difference=...`.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SIZES = {
    "smoke": dict(train=8, heldout=8, history=2, steps=2, batch=4, max_length=512, lr=5e-4, r=8),
    "cpu": dict(train=96, heldout=200, history=2, steps=24, batch=4, max_length=512, lr=5e-4, r=16),
}
VIEWS = ("ica", "none")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=SIZES, default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import numpy as np

    from personalign.curate.synth import synth_records
    from personalign.eval.rm import RmConfig, evaluate_rm, write_rm
    from personalign.metrics import paired_difference
    from personalign.models.lora import LoraSettings
    from personalign.records.io import write_jsonl
    from personalign.train.config import TrainConfig
    from personalign.train.loop import train
    from personalign.views.build import ViewConfig

    size = SIZES[args.size]
    out = Path(f"runs/study-rm-{args.size}")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    history = {"ugc_per_user": size["history"], "pairs_per_user": size["history"]}
    train_file, heldout_file = out / "train.jsonl", out / "heldout.jsonl"
    write_jsonl(synth_records(size["train"], seed=args.seed + 1, **history), train_file)
    write_jsonl(synth_records(size["heldout"], seed=args.seed + 2, **history), heldout_file)
    results, correct, timings = {}, {}, {}
    for view in VIEWS:
        t0 = time.perf_counter()
        trained = train(TrainConfig(
            model=None, data=str(train_file), view=ViewConfig(view=view, sample_history=True, seed=args.seed),
            loss="rm", learning_rate=size["lr"], per_device_train_batch_size=size["batch"], max_steps=size["steps"],
            max_length=size["max_length"], lr_scheduler_type="cosine", warmup_ratio=0.05,
            logging_steps=max(1, size["steps"] // 6), save_strategy="no", eval_strategy="no",
            lora=LoraSettings(r=size["r"], lora_alpha=2 * size["r"], lora_dropout=0.0),
            output_dir=str(out / f"rm-{view}"), overwrite_output_dir=True, seed=args.seed, report_to="none"))
        timings[f"train-{view}"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        result = evaluate_rm(RmConfig(data=str(heldout_file), model=str(trained.final_dir), max_length=size["max_length"]))
        write_rm(result, out / f"eval-{view}")
        timings[f"eval-{view}"] = round(time.perf_counter() - t0, 1)
        correct[view] = np.array([r[0] > r[-1] for r in result.rewards], dtype=np.float64)
        results[view] = {"accuracy": result.estimates["overall"].as_dict(), "view": result.config["view"]["view"],
                         "final_train_loss": trained.train_metrics.get("train/loss"), "steps": trained.global_step}
    difference = paired_difference(correct["ica"], correct["none"]).as_dict()
    study = {"size": args.size, "settings": size, "seed": args.seed, "results": results,
             "difference_ica_minus_none": difference, "timings_s": timings,
             "total_s": round(time.perf_counter() - started, 1),
             "command": f".venv/bin/python bench/study_rm_views.py --size {args.size}"}
    (out / "study.json").write_text(json.dumps(study, indent=2) + "\n")
    for view in VIEWS:
        a = results[view]["accuracy"]
        print(f"{view}: reward accuracy {a['value']:.3f} [{a['low']:.3f}, {a['high']:.3f}] on {a['n']} held-out pairs "
              f"(final train loss {results[view]['final_train_loss']:.3f}, {results[view]['steps']} steps)")
    print(f"ica - none: {difference['value']:+.3f} [{difference['low']:+.3f}, {difference['high']:+.3f}] (paired bootstrap)")
    ica, none = (results[v]["accuracy"]["value"] for v in VIEWS)
    print(f"ratio={ica / max(none, 1e-9):.3f} ica={ica:.3f} none={none:.3f} difference={difference['value']:+.3f} "
          f"total_s={study['total_s']}")


if __name__ == "__main__":
    main()

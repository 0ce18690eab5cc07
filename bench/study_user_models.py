"""One comparison of user models, honestly sized (issue: personalization you can see): every
representation of `personalign users`, and the prompt-conditioned reward models (`loss: rm` on the
`none` and `ica` views), on the same held-out synthetic users; then the representations on P-Soups
(the papers' protocol: each record a user, its 4 history pairs the shots), each half separately.

* Synthetic users: `data synth --n 2000 --seed 21` to learn on, `--n 400 --seed 22` held out; every
  representation learned with its defaults, scored at 0, 1, 2 and 4 shots (95% intervals over users).
  Paired differences against `mean-diff` (the no-training baseline) at 4 shots, resampling users.
* Reward models: LoRA on the embedded SmolLM2-135M-Instruct with a score head (as
  bench/study_rm_views.py, 24 steps × batch 4 on 96 of the training users), scored by `eval rm` on the
  same 400 held-out users (their target pair, under the model's view, history cut to 512 tokens).
* P-Soups: learned on records 0-249 and 300-549, scored on 250-299 (friendly half) and 550-599
  (unfriendly half).

    python bench/study_user_models.py               # ~30 minutes on a 2-core CPU
    python bench/study_user_models.py --size smoke  # a minute or two: checks the script runs

Writes `runs/study-users-<size>/` and, at full size, `results/user-models.md` and `.json`. The last
line reads `ratio=<best learned accuracy / mean-diff accuracy at 4 shots> best=... mean_diff=...`.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

SIZES = {
    "smoke": dict(train=60, heldout=30, rm_records=8, rm_steps=2, psoups=(20, 5)),
    "full": dict(train=2000, heldout=400, rm_records=96, rm_steps=24, psoups=(250, 50)),
}
REPRESENTATIONS = [("bt", {}), ("mean-diff", {}), ("lowrank", {}), ("mixture", {}), ("embedding", {}),
                   ("latent", {"context": "pairs"}), ("latent", {"context": "all"})]
SHOTS = [0, 1, 2, 4]


def label(rep: str, options: dict) -> str:
    return rep + (f" ({options['context']})" if "context" in options else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=SIZES, default="full")
    parser.add_argument("--no-rm", action="store_true", help="skip the prompt-conditioned reward models")
    args = parser.parse_args()
    from personalign.curate.synth import synth_records
    from personalign.metrics import paired_difference
    from personalign.records.io import write_jsonl
    from personalign.users.evaluate import UsersEvalConfig, evaluate_user_model, write_users_accuracy
    from personalign.users.train import UsersTrainConfig, train_user_model

    size = SIZES[args.size]
    out = Path(f"runs/study-users-{args.size}")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    train_file, heldout_file = out / "train.jsonl", out / "heldout.jsonl"
    write_jsonl(synth_records(size["train"], seed=21), train_file)
    write_jsonl(synth_records(size["heldout"], seed=22), heldout_file)

    def run(rep: str, options: dict, train_data: Path, test_data: Path, name: str, shots: list[int]):
        model_dir = out / f"model-{name}"
        t0 = time.perf_counter()
        trained = train_user_model(UsersTrainConfig(data=str(train_data), out=str(model_dir), representation=rep,
                                                    overwrite=True, **options), progress=False)
        cfg = UsersEvalConfig(model=str(model_dir), data=str(test_data), out=str(out / f"eval-{name}"), shots=shots,
                              overwrite=True)
        result = evaluate_user_model(cfg, progress=False)
        write_users_accuracy(result, cfg)
        return trained, result, round(time.perf_counter() - t0, 1)

    synthetic, per_user, seconds = {}, {}, {}
    for rep, options in REPRESENTATIONS:
        name = label(rep, options)
        trained, result, seconds[name] = run(rep, options, train_file, heldout_file,
                                             name.replace(" (", "-").rstrip(")"), SHOTS)
        synthetic[name] = {"curve": [r.as_dict() for r in result.curve],
                           "seen": None if trained.seen is None else trained.seen.as_dict()}
        per_user[name] = np.array([c / n for _, c, n in result.curve[-1].per_user])
        print(f"{name}: " + ", ".join(f"k={r.shots} {r.overall.value:.3f} [{r.overall.low:.3f}, {r.overall.high:.3f}]"
                                      for r in result.curve), flush=True)
    if not args.no_rm:
        for view in ("none", "ica"):
            per_user[f"rm ({view})"], synthetic[f"rm ({view})"], seconds[f"rm ({view})"] = reward_model(
                out, train_file, heldout_file, view, size)
            print(f"rm ({view}): {synthetic[f'rm ({view})']['curve'][-1]['accuracy']:.3f}", flush=True)
    differences = {name: paired_difference(per_user[name], per_user["mean-diff"], n_boot=2000).as_dict()
                   for name in per_user if name != "mean-diff"}

    psoups = p_soups(out, size, run)
    best = max((n for n in per_user if n not in ("mean-diff",) and not n.startswith(("rm", "bt"))),
               key=lambda n: per_user[n].mean())
    study = {"size": args.size, "synthetic": synthetic, "difference_vs_mean_diff_at_4_shots": differences,
             "p_soups": psoups, "seconds": seconds, "total_s": round(time.perf_counter() - started, 1),
             "command": f".venv/bin/python bench/study_user_models.py --size {args.size}"
                        + (" --no-rm" if args.no_rm else "")}
    (out / "study.json").write_text(json.dumps(study, indent=2) + "\n")
    if args.size == "full":
        Path("results/user-models.json").write_text(json.dumps(study, indent=2) + "\n")
        Path("results/user-models.md").write_text(markdown(study))
    b, m = per_user[best].mean(), per_user["mean-diff"].mean()
    d = differences[best]
    print(f"ratio={b / m:.3f} best={best.replace(' ', '_')}:{b:.3f} mean_diff={m:.3f} "
          f"difference={d['value']:+.3f} low={d['low']:+.3f} high={d['high']:+.3f} total_s={study['total_s']}")


def reward_model(out: Path, train_file: Path, heldout_file: Path, view: str, size: dict):
    """`loss: rm` on `view` (LoRA, SmolLM2-135M), scored by `eval rm` on the held-out users' target pairs."""
    from personalign.eval.rm import RmConfig, evaluate_rm, write_rm
    from personalign.models.lora import LoraSettings
    from personalign.train.config import TrainConfig
    from personalign.train.loop import train
    from personalign.views.build import ViewConfig

    t0 = time.perf_counter()
    trained = train(TrainConfig(
        model=None, data=str(train_file), limit=size["rm_records"], view=ViewConfig(view=view, sample_history=True),
        loss="rm", learning_rate=5e-4, per_device_train_batch_size=4, max_steps=size["rm_steps"], max_length=512,
        lr_scheduler_type="cosine", warmup_ratio=0.05, logging_steps=4, save_strategy="no", eval_strategy="no",
        lora=LoraSettings(r=16, lora_alpha=32, lora_dropout=0.0), output_dir=str(out / f"rm-{view}"),
        overwrite_output_dir=True, seed=0, report_to="none"))
    result = evaluate_rm(RmConfig(data=str(heldout_file), model=str(trained.final_dir), max_length=512))
    write_rm(result, out / f"eval-rm-{view}")
    correct = np.array([1.0 if r[0] > r[-1] else 0.5 if r[0] == r[-1] else 0.0 for r in result.rewards])
    e = result.estimates["overall"]
    curve = [{"shots": "its history in the prompt" if view == "ica" else "none", "accuracy": e.value,
              "ci": [e.low, e.high], "n": e.n}]
    return correct, {"curve": curve, "train_records": size["rm_records"], "steps": trained.global_step}, round(
        time.perf_counter() - t0, 1)


def p_soups(out: Path, size: dict, run) -> dict:
    """Each representation learned on the first records of both halves, scored on each half's last ones."""
    from personalign.records.dimensions import shared_data_dir
    from personalign.records.io import write_jsonl

    shared = shared_data_dir()
    if shared is None:
        return {"skipped": "shared/data not found"}
    records = json.loads((shared / "p-soups" / "friendly_unfriendly.json").read_text(encoding="utf-8"))
    n_train, n_test = size["psoups"]
    halves = {"friendly": records[:300], "unfriendly": records[300:]}
    write_jsonl([r for h in halves.values() for r in h[:n_train]], out / "psoups-train.jsonl")
    for name, h in halves.items():
        write_jsonl(h[300 - n_test:], out / f"psoups-{name}.jsonl")
    results = {}
    for rep, options in REPRESENTATIONS:
        if options.get("context") == "all":
            continue  # P-Soups users carry no comments or demographic text: the same as (pairs)
        name = label(rep, options)
        results[name] = {}
        for half in halves:
            _, result, _ = run(rep, options, out / "psoups-train.jsonl", out / f"psoups-{half}.jsonl",
                               f"psoups-{half}-{name.replace(' (', '-').rstrip(')')}", [4])
            results[name][half] = result.curve[-1].as_dict()
        print(f"P-Soups {name}: " + ", ".join(f"{h} {r['accuracy']:.3f}" for h, r in results[name].items()), flush=True)
    return results


def _cell(r: dict) -> str:
    return f"{r['accuracy']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]"


def markdown(study: dict) -> str:
    syn, diffs = study["synthetic"], study["difference_vs_mean_diff_at_4_shots"]
    lines = ["# User models vs prompt-conditioned reward models on held-out users", "",
             f"Produced by `{study['command']}` ({study['total_s'] / 60:.0f} minutes on the 2-core CPU). "
             "Accuracy = share of the held-out users' test pairs ranked the user's way (ties ½); 95% bootstrap "
             "intervals resample users. Features: the packaged all-MiniLM-L6-v2, frozen.", "",
             "## Synthetic users (`data synth`: 2000 to learn from, seed 21; 400 held out, seed 22)", "",
             "| model | 0 shots | 1 shot | 2 shots | 4 shots | Δ vs mean-diff at 4 shots (paired) |",
             "|---|---|---|---|---|---|"]
    for name, r in syn.items():
        cells = [_cell(c) for c in r["curve"]] if len(r["curve"]) == 4 else ["", "", "", _cell(r["curve"][0])]
        d = diffs.get(name)
        sig = "" if d is None else (f"{d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
                                    + (" **significant**" if d["low"] > 0 or d["high"] < 0 else " not significant"))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {sig} |")
    lines += ["", "`rm (none)` and `rm (ica)` are `loss: rm` reward models on SmolLM2-135M (LoRA, 24 steps × 4 of 96 "
              "training users, the CPU budget of bench/study_rm_views.py); `ica` reads the user's history in its "
              "prompt, so its column is placed at 4 shots. `latent (all)` also reads each user's comments and "
              "demographic text (as VPL's encoder reads a user's context); `latent (pairs)` reads only the pairs, "
              "as every other representation does.", "",
              "## P-Soups (the papers' protocol: a record is a user, its 4 history pairs are the shots)", "",
              "Learned on records 0–249 and 300–549; scored on 250–299 (users preferring the friendly answer) and "
              "550–599 (the unfriendly half).", "", "| model | friendly half | unfriendly half |", "|---|---|---|"]
    for name, halves in study["p_soups"].items():
        if isinstance(halves, dict):
            lines.append(f"| {name} | {_cell(halves['friendly'])} | {_cell(halves['unfriendly'])} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

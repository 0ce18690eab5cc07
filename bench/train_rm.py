"""Benchmark: our reward-model training (`loss: rm`) vs. TRL's `RewardTrainer` on the same pairs.

Same model (the embedded SmolLM2-135M-Instruct as its prepared HF directory, loaded by both as
`AutoModelForSequenceClassification` with one label), same pairs, same batches, same
hyper-parameters, fp32 on CPU, full fine-tuning (or `--lora`: r 16, alpha 32, dropout 0, all
linear layers, score head trained whole). Each contender runs in a fresh subprocess.

Equal inputs, as in `bench/train_dpo.py`: synthetic AlignX users rendered ONCE under the `ica`
view (chat template, AlignX training-style history sampling, history fitted to max_length), so
prompts are long as in the real data; ours reads the AlignX file and renders the same views
itself, TRL gets the rendered strings as an explicit-prompt {"prompt", "chosen", "rejected"}
dataset. Batches: TRL gets the rows in our epoch-0 permutation with
`train_sampling_strategy="sequential"`, so step k of both trains the same pairs. Both: AdamW
(β 0.9/0.999, eps 1e-8, no weight decay), linear schedule without warmup, clipping 1.0, no
dropout, no gradient checkpointing, no bf16 (TRL's defaults for both are on; off as ours are).

What differs is how a pair is computed: TRL right-pads chosen and rejected as two full sequences
(the prompt is encoded twice) and pools the last non-pad token; ours packs prompt ‖ chosen ‖
rejected into one sequence (the prompt once) and reads the reward at each response's EOS.

`steps`: first step start to last step end (ours: summed from the per-step `samples_per_second`
of metrics.jsonl; TRL: a callback). Pairs/s = steps × batch / seconds. The losses of step 1 are
printed for both (the same untrained head on the same pairs: close, not equal, since TRL
tokenizes prompt + response as one string and pools one token earlier when pad = EOS).

Usage: PERSONALIGN_HOME=.cache/personalign-test .venv/bin/python bench/train_rm.py \
           [--pairs 16] [--batch 4] [--steps 4] [--max-length 512] [--lr 1e-5] [--lora]
The last line reads `ratio=<ours/trl pairs/s> ours_pairs_s=... trl_pairs_s=... ...`.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from train_dpo import LORA, peak_rss_mb, prepare_data, step_clock, view_config  # noqa: E402  (bench/ sibling)


def child_ours(spec: dict) -> dict:
    import personalign.train.loop as loop
    from personalign.models.lora import LoraSettings
    from personalign.train.checkpoints import METRICS_FILE
    from personalign.train.config import TrainConfig

    cfg = TrainConfig(
        model=spec["model"], data=spec["data"], view=view_config(spec["seed"]), loss="rm",
        learning_rate=spec["lr"], per_device_train_batch_size=spec["batch"], max_steps=spec["steps"],
        max_length=spec["max_length"], warmup_ratio=0.0, lr_scheduler_type="linear", max_grad_norm=1.0,
        lora=LoraSettings(**LORA) if spec["lora"] else None, output_dir=spec["out"], logging_steps=1,
        save_steps=10**9, report_to="none", seed=spec["seed"],
    )
    wall0 = time.perf_counter()
    result = loop.train(cfg)
    wall = time.perf_counter() - wall0
    rows = [json.loads(line) for line in (Path(spec["out"]) / METRICS_FILE).read_text().splitlines()]
    rows = [r for r in rows if "train/loss" in r]
    steps_s = sum(result.counts["global_batch"] / r["train/samples_per_second"] for r in rows)
    return {"wall_s": wall, "steps_s": steps_s, "losses": [r["train/loss"] for r in rows]}


def child_trl(spec: dict) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from personalign.train.schedule import epoch_order

    timing: dict = {"step_end": []}

    args = RewardConfig(
        output_dir=spec["out"], use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
        model_init_kwargs={"dtype": torch.float32, "attn_implementation": "sdpa"},
        per_device_train_batch_size=spec["batch"], gradient_accumulation_steps=1, max_steps=spec["steps"],
        learning_rate=spec["lr"], lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
        adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=1.0, max_length=None,
        disable_dropout=True, train_sampling_strategy="sequential", dataloader_num_workers=0,
        dataloader_pin_memory=False, logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True,
        seed=spec["seed"],
    )
    peft_config = LoraConfig(task_type="SEQ_CLS", **LORA) if spec["lora"] else None
    wall0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    rows = [json.loads(line) for line in Path(spec["trl_data"]).read_text().splitlines()]
    order = epoch_order(len(rows), spec["seed"], 0).tolist()
    trainer = RewardTrainer(model=spec["model"], args=args, train_dataset=Dataset.from_list([rows[i] for i in order]),
                            processing_class=tokenizer, peft_config=peft_config, callbacks=[step_clock(timing)])
    trainer.train()
    wall = time.perf_counter() - wall0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    return {"wall_s": wall, "steps_s": timing["step_end"][-1] - timing["train_begin"], "losses": losses}


def run_child(which: str, spec: dict, folder: Path) -> dict:
    run_dir = folder / which
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    spec = dict(spec, out=str(run_dir / "out"))
    if which == "ours":  # a fresh copy of the data: the token store beside it is cold
        shutil.copy(spec["data"], run_dir / "alignx.jsonl")
        spec["data"] = str(run_dir / "alignx.jsonl")
    (run_dir / "spec.json").write_text(json.dumps(spec))
    env = dict(os.environ, HF_DATASETS_CACHE=str(run_dir / "hf-datasets"), TQDM_DISABLE="1", CUDA_VISIBLE_DEVICES="",
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    proc = subprocess.run([sys.executable, __file__, "--child", which, str(run_dir / "spec.json")],
                          capture_output=True, text=True, env=env)
    (run_dir / "stderr.txt").write_text(proc.stderr)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-6000:])
        raise SystemExit(f"{which} failed with exit code {proc.returncode}; see {run_dir / 'stderr.txt'}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--lora", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", nargs=2, metavar=("WHICH", "SPEC"))
    args = ap.parse_args()
    if args.child:
        spec = json.loads(Path(args.child[1]).read_text())
        res = (child_ours if args.child[0] == "ours" else child_trl)(spec)
        print(json.dumps(res | {"peak_rss_mb": peak_rss_mb()}))
        return

    from personalign.models.loading import prepare_default_model

    model_dir = str(prepare_default_model(progress=False))
    folder = Path(tempfile.mkdtemp(prefix="bench-rm-"))
    data, trl_data, stats = prepare_data(folder, args.pairs, args.max_length, args.seed, model_dir)
    spec = {"model": model_dir, "data": str(data), "trl_data": str(trl_data), "batch": args.batch,
            "steps": args.steps, "max_length": args.max_length, "lr": args.lr, "lora": args.lora, "seed": args.seed}
    results = {which: run_child(which, spec, folder) for which in ("ours", "trl")}
    pairs = args.steps * args.batch
    ours, trl = (pairs / results[w]["steps_s"] for w in ("ours", "trl"))
    for which, r in results.items():
        print(f"{which}: {pairs / r['steps_s']:.3f} pairs/s over {args.steps} steps ({r['steps_s']:.1f} s), "
              f"wall {r['wall_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB, losses {[round(x, 4) for x in r['losses']]}")
    print(f"data: {args.pairs} pairs, ica view, {stats['history_items_per_prompt']:.1f} history items per prompt, "
          f"max_length {args.max_length}, batch {args.batch}, {'LoRA' if args.lora else 'full FT'}, fp32 CPU")
    shutil.rmtree(folder, ignore_errors=True)
    print(f"ratio={ours / trl:.2f} ours_pairs_s={ours:.3f} trl_pairs_s={trl:.3f} "
          f"first_loss_ours={results['ours']['losses'][0]:.4f} first_loss_trl={results['trl']['losses'][0]:.4f} "
          f"rss_ours_mb={results['ours']['peak_rss_mb']:.0f} rss_trl_mb={results['trl']['peak_rss_mb']:.0f}")


if __name__ == "__main__":
    main()

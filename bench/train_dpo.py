"""Benchmark: our DPO loop (`personalign.train.loop.train`) vs. TRL's `DPOTrainer` on equal footing.

Same model (the embedded SmolLM2-135M-Instruct, as its prepared HF directory: TRL rebuilds the
reference model from `config._name_or_path`), same data, same batches, same hyper-parameters,
fp32 on CPU. Configurations: full fine-tuning and LoRA (r 16, alpha 32, dropout 0, all linear
layers but the LM head). Contenders, each in a fresh subprocess (its own peak RSS, ru_maxrss):

* ours:     `train(TrainConfig(...))`; reference log-probs from our on-disk cache, cold (every run
            gets a fresh copy of the data, so the cache is computed inside the timed call);
* trl:      `DPOTrainer` as shipped (full FT: a second, frozen reference model in memory, scored
            every step; LoRA: reference = the policy with its adapters disabled, every step);
* trl-pre:  `DPOTrainer` with `precompute_ref_log_probs=True` (reference scored once, in
            `__init__`, then read from the dataset);
* ours-store: ours from a token store built beforehand, untimed (as `personalign data tokenize`
            on a CPU node ahead of a GPU job); its reference cache is cold.

Minimal-work bound: the same model, forward + backward + AdamW step over the same packed rows
(prompt once, then the responses) as plain causal sequences (SDPA's causal kernel, no custom
mask, one LM-head pass over every position): what any shared-prefix trainer must at least pay.
Reported as tokens/s next to ours (non-padding tokens per second over the steps).

Equal inputs. Synthetic AlignX records (`synth_records`) are written to JSONL. Ours reads that
file and renders ICA views itself (chat template, AlignX training-style history sampling, history
fitted to `max_length`). Feeding ours pre-rendered text is impossible: every template wraps the
task again. So the views are rendered ONCE here, with the exact `ViewConfig` our loader uses
(`render_views`, view max_length = max_length), and TRL gets those strings as a
non-conversational {"prompt", "chosen", "rejected"} dataset (no chat template applied again).
TRL appends the EOS text `<|im_end|>` to each completion and tokenizes prompt and prompt+completion;
ours tokenizes prompt and responses separately and appends the EOS id. The parent checks that the
token ids TRL trained on (dumped from its prepared dataset) equal ours (the token store) for every
pair, that no BOS/special token is added (SmolLM2 adds none), and that nothing is truncated (the
views fit prompt + longest response + EOS into max_length, so neither TRL's keep-start cut nor
our prompt cut applies). Batches: TRL gets the rows in our epoch-0 permutation
(`epoch_order(n, seed, 0)`) with `train_sampling_strategy="sequential"`, so step k of both trains
the same pairs. Both: AdamW (β 0.9/0.999, eps 1e-8, no weight decay), linear schedule without
warmup, gradient clipping 1.0, sigmoid loss, β 0.1, no dropout, gradient checkpointing off (TRL
defaults it ON; turned off as ours is), bf16 off (TRL defaults it ON; emulated on this CPU).

Timings. `wall`: the whole training call — ours: `train(cfg)` (loads model and tokenizer, reads,
renders and tokenizes the data, computes the reference cache, trains, saves `final/`); TRL:
tokenizer + dataset construction, `DPOTrainer(...)` (loads policy and reference model,
tokenizes, precomputes), `train()`, `save_model(final/)`. `steps`: first step start to last step
end (ours: summed from the per-step `samples_per_second` in metrics.jsonl; TRL: a callback,
on_train_begin to the last on_step_end). `ref`: time spent scoring the reference up front (ours:
the cache computation; trl-pre: `_precompute_ref_logps`). Pairs/s = steps × batch / seconds.
CPU-seconds of the child (all threads) are reported too; they are steadier on a shared machine.

Losses: the per-step training loss as logged (step 1 is computed before the first update; with
policy == reference the sigmoid DPO loss is log 2 = 0.693147), full precision (ours:
metrics.jsonl with logging_steps=1; TRL: `state.log_history`, which is not rounded).

Usage (PERSONALIGN_HOME must hold, or will get, the prepared default model):
    PERSONALIGN_HOME=.cache/personalign-test .venv/bin/python bench/train_dpo.py \
        [--pairs 12] [--batch 4] [--steps 3] [--max-length 384] [--lr 1e-5] [--lora-lr 1e-4] \
        [--configs full|lora|full,lora] [--contenders ours,trl,trl-pre] [--repeat 1] [--profile ours]
The last line reads `ratio=<ours/trl pairs/s, full FT> ratio_precompute=<ours/trl-pre, full FT>
ratio_lora=<ours/trl, LoRA> ratio_lora_precompute=... first_step_loss_diff=<max |ours − TRL|
over all configs and TRL variants> ...`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONTENDERS = ("ours", "trl", "trl-pre", "ours-store")
LORA = {"r": 16, "lora_alpha": 32.0, "lora_dropout": 0.0, "target_modules": "all-linear"}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def view_config(seed: int):
    from personalign.views.build import ViewConfig

    return ViewConfig(view="ica", template="chat", sample_history=True, seed=seed)


def lora_hash(model) -> str:
    """A digest of the initial LoRA weights (A random, B zero), to check both sides start alike."""
    import hashlib

    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "lora_" in name:
                h.update(name.split("base_model.model.")[-1].encode())
                h.update(p.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Children


def child_ours(spec: dict) -> dict:
    import torch

    import personalign.train.build as build
    import personalign.train.data as data
    import personalign.train.loop as loop
    from personalign.train.checkpoints import METRICS_FILE

    timing: dict = {}
    real_reference, real_apply_lora, real_store = data.reference_table, build.apply_lora, data.load_store

    def timed_reference(*args, **kwargs):
        t = time.perf_counter()
        out = real_reference(*args, **kwargs)
        timing["ref_s"] = timing.get("ref_s", 0.0) + time.perf_counter() - t
        timing["ref_cache_hit"] = out[1]
        return out

    def hashed_apply_lora(model, settings, **kwargs):
        wrapped = real_apply_lora(model, settings, **kwargs)
        timing["lora_init"] = lora_hash(wrapped)
        return wrapped

    def timed_store(*args, **kwargs):
        t = time.perf_counter()
        out = real_store(*args, **kwargs)
        timing.setdefault("store_s", time.perf_counter() - t)
        timing.setdefault("store_hit", out[1])
        return out

    data.reference_table, data.load_store = timed_reference, timed_store
    build.apply_lora = hashed_apply_lora  # the run builds its trainable module there
    cfg = our_config(spec)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    result = loop.train(cfg)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    rows = [json.loads(line) for line in (Path(spec["out"]) / METRICS_FILE).read_text().splitlines()]
    rows = [r for r in rows if "train/loss" in r]
    steps_s = sum(result.counts["global_batch"] / r["train/samples_per_second"] for r in rows)
    tokens_s = sum(r["train/tokens_per_second"] * result.counts["global_batch"] / r["train/samples_per_second"]
                   for r in rows)
    return {"wall_s": wall, "cpu_s": cpu, "steps_s": steps_s, "ref_s": timing.get("ref_s"),
            "ref_cache_hit": timing.get("ref_cache_hit"), "store_s": timing.get("store_s"),
            "store_hit": timing.get("store_hit"), "tokens_per_s": tokens_s / steps_s,
            "losses": [r["train/loss"] for r in rows],
            "lora_init": timing.get("lora_init"), "threads": torch.get_num_threads(),
            "truncated": result.counts.get("truncated_for_length")}


def our_config(spec: dict):
    from personalign.models.lora import LoraSettings
    from personalign.train.config import TrainConfig

    return TrainConfig(
        model=spec["model"], data=spec["data"], view=view_config(spec["seed"]), loss="dpo", beta=spec["beta"],
        loss_type="sigmoid", learning_rate=spec["lr"], per_device_train_batch_size=spec["batch"],
        max_steps=spec["steps"], max_length=spec["max_length"], warmup_ratio=0.0, lr_scheduler_type="linear",
        max_grad_norm=1.0, bf16=False, lora=LoraSettings(**LORA) if spec["lora"] else None,
        output_dir=spec["out"], logging_steps=1, save_steps=10**9, report_to="none", seed=spec["seed"],
    )


def build_store(spec: dict):
    """The training store `train` will read for `spec` (untimed, for ours-store and the bound)."""
    from personalign.models.loading import load_tokenizer
    from personalign.tokenstore.store import load_store
    from personalign.train.collate import run_specs

    return load_store(*run_specs(our_config(spec))[0], load_tokenizer(spec["model"]), progress=False)[0]


def child_bound(spec: dict) -> dict:
    """Forward + backward + AdamW over our packed rows as plain causal sequences (no mask, full LM head)."""
    import torch

    from personalign.models.loading import load_model
    from personalign.models.logprobs import PAD_SEGMENT, pack_batch
    from personalign.train.schedule import epoch_order, step_micro_batches

    store = build_store(spec)
    model, _ = load_model(spec["model"], dtype="float32", attn_implementation="sdpa", device=spec.get("device", "cpu"))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec["lr"])
    order = epoch_order(len(store), spec["seed"], 0)
    tokens, t0 = 0, time.perf_counter()
    for k in range(spec["steps"]):
        (idx,) = step_micro_batches(order, k, per_device=spec["batch"], accumulation=1, rank=0, world=1)
        packed = pack_batch(store.examples(idx)).to(model.device)
        tokens += int((packed.segment_ids != PAD_SEGMENT).sum())
        logits = model(input_ids=packed.input_ids, use_cache=False).logits
        logits.float().log_softmax(-1).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    seconds = time.perf_counter() - t0
    return {"wall_s": seconds, "cpu_s": time.process_time(), "steps_s": seconds, "tokens_per_s": tokens / seconds,
            "losses": []}


def step_clock(timing: dict):
    """A TRL callback that notes when training begins (`train_begin`) and when each step ends (`step_end`)."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            timing["train_begin"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            timing["step_end"].append(time.perf_counter())

    return Clock()


def child_trl(spec: dict, precompute: bool) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from personalign.train.schedule import epoch_order

    timing: dict = {"step_end": []}

    class Trainer(DPOTrainer):
        def _precompute_ref_logps(self, *args, **kwargs):
            t = time.perf_counter()
            out = super()._precompute_ref_logps(*args, **kwargs)
            timing["ref_s"] = timing.get("ref_s", 0.0) + time.perf_counter() - t
            return out

    args = DPOConfig(
        output_dir=spec["out"], use_cpu=spec.get("device", "cpu") == "cpu", bf16=False, fp16=False,
        gradient_checkpointing=False,
        model_init_kwargs={"dtype": torch.float32, "attn_implementation": "sdpa"},
        per_device_train_batch_size=spec["batch"], gradient_accumulation_steps=1, max_steps=spec["steps"],
        learning_rate=spec["lr"], lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
        adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=1.0,
        beta=spec["beta"], loss_type=["sigmoid"], max_length=spec["max_length"], truncation_mode="keep_start",
        precompute_ref_log_probs=precompute, disable_dropout=True,
        train_sampling_strategy="sequential", dataloader_num_workers=0, dataloader_pin_memory=False,
        logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True, seed=spec["seed"],
    )
    peft_config = LoraConfig(task_type="CAUSAL_LM", **LORA) if spec["lora"] else None
    wall0, cpu0 = time.perf_counter(), time.process_time()
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    with open(spec["trl_data"]) as f:
        rows = [json.loads(line) for line in f]
    order = epoch_order(len(rows), spec["seed"], 0).tolist()  # our epoch-0 permutation: same batches per step
    dataset = Dataset.from_list([rows[i] for i in order])
    trainer = Trainer(model=spec["model"], args=args, train_dataset=dataset, processing_class=tokenizer,
                      peft_config=peft_config, callbacks=[step_clock(timing)])
    lora_init = lora_hash(trainer.model) if spec["lora"] else None
    trainer.train()
    trainer.save_model(str(Path(spec["out"]) / "final"))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    ds = trainer.train_dataset
    tokens = {order[j]: [ds[j]["prompt_ids"], ds[j]["chosen_ids"], ds[j]["rejected_ids"]] for j in range(len(ds))}
    Path(spec["tokens_out"]).write_text(json.dumps({str(k): v for k, v in tokens.items()}))
    return {"wall_s": wall, "cpu_s": cpu, "steps_s": timing["step_end"][-1] - timing["train_begin"],
            "ref_s": timing.get("ref_s"), "losses": losses, "lora_init": lora_init,
            "threads": torch.get_num_threads(), "optim": args.optim,
            "ref_model_in_memory": trainer.ref_model is not None}


def child(which: str, spec_path: str, profile: bool) -> None:
    spec = json.loads(Path(spec_path).read_text())
    run = {"ours": lambda: child_ours(spec), "ours-store": lambda: child_ours(spec),
           "trl": lambda: child_trl(spec, False), "trl-pre": lambda: child_trl(spec, True),
           "bound": lambda: child_bound(spec)}[which]
    if profile:
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        res = prof.runcall(run)
        for key in ("cumulative", "tottime"):
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats(key).print_stats(35)
            print(f"==== cProfile ({key}) of {which} ====\n{buf.getvalue()}", file=sys.stderr)
    else:
        res = run()
    res["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(res))


# ---------------------------------------------------------------------------------------------
# Parent


def prepare_data(folder: Path, n: int, max_length: int, seed: int, model_dir: str) -> tuple[Path, Path, dict]:
    """Synthetic AlignX JSONL for ours; the SAME views rendered once, as prompt/chosen/rejected, for TRL."""
    from personalign.curate.synth import synth_records
    from personalign.models.loading import load_tokenizer
    from personalign.records.io import read_examples, write_jsonl
    from personalign.views.build import render_views

    data = folder / "alignx.jsonl"
    write_jsonl(synth_records(n, seed=0), data)
    tokenizer = load_tokenizer(model_dir)
    view = view_config(seed).model_copy(update={"max_length": max_length})  # what load_items renders with
    rows, used = [], 0
    for r in render_views(read_examples(data), view, tokenizer):
        chosen, rejected = r.responses
        rows.append({"prompt": r.prompt, "chosen": chosen, "rejected": rejected})
        used += r.history_used
    trl_data = folder / "trl.jsonl"
    write_jsonl(rows, trl_data)
    return data, trl_data, {"history_items_per_prompt": used / len(rows)}


def check_tokens(data: Path, tokens_file: Path, max_length: int, seed: int, model_dir: str) -> dict:
    """Our tokenization (the token store) against the token ids TRL trained on, pair by pair."""
    from personalign.models.loading import load_tokenizer
    from personalign.tokenstore.store import load_store
    from personalign.train.collate import store_spec

    tokenizer = load_tokenizer(model_dir)
    store, _ = load_store(data, store_spec(view_config(seed), loss="dpo", max_length=max_length), tokenizer,
                          progress=False)
    items = store.examples(range(len(store)))
    trl = {int(k): v for k, v in json.loads(tokens_file.read_text()).items()}
    equal = sum(1 for i, t in enumerate(items) if trl.get(i) == [t.prompt_ids, *t.response_ids])
    longest = max(len(t.prompt_ids) + max(len(r) for r in t.response_ids) for t in items)
    return {"pairs": len(items), "pairs_equal": equal, "trl_pairs": len(trl),
            "truncated": store.counts["truncated_for_length"], "longest_sequence": longest,
            "mean_prompt_tokens": sum(len(t.prompt_ids) for t in items) / len(items),
            "mean_response_tokens": sum(len(r) for t in items for r in t.response_ids) / (2 * len(items)),
            "bos_added": tokenizer("x")["input_ids"] != tokenizer("x", add_special_tokens=False)["input_ids"]}


def run_child(which: str, spec: dict, folder: Path, tag: str, profile: bool) -> dict:
    run_dir = folder / tag
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    spec = dict(spec, out=str(run_dir / "out"), tokens_out=str(run_dir / "trl_tokens.json"))
    if which in ("ours", "ours-store"):  # a fresh copy of the data: the caches beside it are cold
        shutil.copy(spec["data"], run_dir / "alignx.jsonl")
        spec["data"] = str(run_dir / "alignx.jsonl")
    if which == "ours-store":
        build_store(spec)
    (run_dir / "spec.json").write_text(json.dumps(spec))
    env = dict(os.environ, HF_DATASETS_CACHE=str(run_dir / "hf-datasets"), TQDM_DISABLE="1",
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    if spec.get("device", "cpu") == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # both contenders on the CPU, even on a GPU machine
    cmd = [sys.executable, __file__, "--child", which, str(run_dir / "spec.json")] + (["--profile-child"] if profile else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    (run_dir / "stderr.txt").write_text(proc.stderr)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-6000:])
        raise SystemExit(f"{which} ({tag}) failed with exit code {proc.returncode}; see {run_dir / 'stderr.txt'}")
    if profile:
        print(proc.stderr[proc.stderr.find("==== cProfile"):], flush=True)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["tokens_file"] = spec["tokens_out"] if which.startswith("trl") else None
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, help="records in the data set (default: steps × batch, one epoch: "
                    "every contender scores and trains exactly the same pairs)")
    ap.add_argument("--batch", type=int, default=4, help="per-device batch (pairs per step)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=384)
    ap.add_argument("--lr", type=float, default=1e-5, help="learning rate, full fine-tuning")
    ap.add_argument("--lora-lr", type=float, default=1e-4, help="learning rate, LoRA")
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--configs", default="full", help="full,lora for both (about 10 min on 2 cores; "
                    "full alone about 5 min)")
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    ap.add_argument("--repeat", type=int, default=1, help="interleaved rounds (contender order reversed every other round); the "
        "fastest wall "
                    "time of each contender is kept")
    ap.add_argument("--profile", default="", help="comma-separated contenders to run once more under cProfile")
    ap.add_argument("--keep", type=Path, help="keep data and runs in this folder")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where both contenders run (fp32)")
    ap.add_argument("--model", help="model directory (default: the embedded model; bench/gpu_smoke.sh builds one)")
    ap.add_argument("--child", nargs=2, metavar=("WHICH", "SPEC"), help=argparse.SUPPRESS)
    ap.add_argument("--profile-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, args.profile_child)
        return

    from personalign.models.loading import resolve_model

    model_dir = args.model or resolve_model(None)
    args.pairs = args.pairs or args.steps * args.batch
    configs = [c for c in args.configs.split(",") if c]
    contenders = [c for c in args.contenders.split(",") if c]
    if args.steps * args.batch > args.pairs:
        raise SystemExit("--steps × --batch must not exceed --pairs (one epoch, no wrap-around)")
    tmp = tempfile.TemporaryDirectory(prefix="bench-train-dpo-")
    folder = args.keep or Path(tmp.name)
    folder.mkdir(parents=True, exist_ok=True)
    data, trl_data, data_info = prepare_data(folder, args.pairs, args.max_length, args.seed, model_dir)
    base = {"model": model_dir, "data": str(data), "trl_data": str(trl_data), "batch": args.batch,
            "steps": args.steps, "max_length": args.max_length, "beta": args.beta, "seed": args.seed,
            "device": args.device}
    print(f"model {model_dir}; {args.pairs} synthetic AlignX pairs, ICA views (chat template, sampled history, "
          f"{data_info['history_items_per_prompt']:.1f} history items/prompt), batch {args.batch}, {args.steps} steps, "
          f"max_length {args.max_length}, beta {args.beta}, lr {args.lr:g} (full) / {args.lora_lr:g} (LoRA), "
          f"seed {args.seed}, fp32, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", flush=True)

    results: dict[tuple[str, str], dict] = {}
    for rnd in range(args.repeat):
        for config in configs:
            spec = dict(base, lora=config == "lora", lr=args.lora_lr if config == "lora" else args.lr)
            for which in contenders if rnd % 2 == 0 else contenders[::-1]:  # alternate the order per round
                r = run_child(which, spec, folder, f"{config}-{which}-{rnd}", profile=False)
                r["pairs_per_s"] = args.steps * args.batch / r["wall_s"]
                r["pairs_per_cpu_s"] = args.steps * args.batch / r["cpu_s"]
                r["steps_pairs_per_s"] = args.steps * args.batch / r["steps_s"]
                ref = f", ref {r['ref_s']:.1f} s" if r.get("ref_s") else ""
                print(f"[{rnd}] {config:4s} {which:7s}: {r['pairs_per_s']:.3f} pairs/s ({r['wall_s']:.1f} s wall, "
                      f"{r['cpu_s']:.0f} CPU-s; steps {r['steps_s']:.1f} s{ref}), peak RSS {r['peak_rss_mb']:.0f} MB, "
                      f"losses {', '.join(f'{x:.7f}' for x in r['losses'])}, load {os.getloadavg()[0]:.1f}", flush=True)
                prev = results.get((config, which))
                if prev is None or r["wall_s"] < prev["wall_s"]:
                    if prev is not None:
                        r["peak_rss_mb"] = max(r["peak_rss_mb"], prev["peak_rss_mb"])
                    results[config, which] = r

    # Equal inputs: TRL's token ids against ours.
    for (config, which), r in results.items():
        if r.get("tokens_file"):
            chk = check_tokens(data, Path(r["tokens_file"]), args.max_length, args.seed, model_dir)
            print(f"tokens {config}/{which}: {chk['pairs_equal']}/{chk['pairs']} pairs identical to ours "
                  f"(TRL kept {chk['trl_pairs']}); truncated {chk['truncated']}; longest prompt+response+EOS "
                  f"{chk['longest_sequence']} <= {args.max_length}; mean prompt {chk['mean_prompt_tokens']:.0f} "
                  f"tokens, mean response {chk['mean_response_tokens']:.0f} tokens (EOS included); "
                  f"BOS added by tokenizer: {chk['bos_added']}")
            break

    print("\nTRL speed features used: precompute_ref_log_probs (trl-pre; precompute_ref_batch_size = train batch), "
          "its fused LM head (log-probs in tiles, no full logits; always on in 1.16), AdamW "
          f"'{next((r['optim'] for r in results.values() if r.get('optim')), '?')}', gradient_checkpointing "
          "off, bf16 off, no dataloader workers/pin_memory. Not available or not valid here: padding_free "
          "(TRL 1.16 disables it and falls back to padding), use_logits_to_keep (gone from DPOConfig 1.16; "
          "the fused head replaces it), Liger kernels (Triton/GPU), torch_compile (compile time >> 3 steps).")
    print("\n| config | contender | pairs/s (total) | pairs/CPU-s | steps-only pairs/s | wall s | steps s | ref s "
          "| peak RSS MB | loss step 1 | loss step 2 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (config, which), r in results.items():
        losses = r["losses"] + [float("nan")] * 2
        ref = f"{r['ref_s']:.1f}" if r.get("ref_s") else "-"
        print(f"| {config} | {which} | {r['pairs_per_s']:.3f} | {r['pairs_per_cpu_s']:.4f} | "
              f"{r['steps_pairs_per_s']:.3f} | {r['wall_s']:.1f} | {r['steps_s']:.1f} | {ref} | "
              f"{r['peak_rss_mb']:.0f} | {losses[0]:.7f} | {losses[1]:.7f} |")

    def ratio(config: str, other: str, key: str = "pairs_per_s") -> float:
        a, b = results.get((config, "ours")), results.get((config, other))
        return a[key] / b[key] if a and b else float("nan")

    diffs1, diffs2 = [], []
    for config in configs:
        ours = results.get((config, "ours"))
        for other in ("trl", "trl-pre"):
            r = results.get((config, other))
            if not (ours and r):
                continue
            d1, d2 = abs(ours["losses"][0] - r["losses"][0]), abs(ours["losses"][1] - r["losses"][1]) \
                if len(ours["losses"]) > 1 and len(r["losses"]) > 1 else float("nan")
            diffs1.append(d1)
            diffs2.append(d2)
            same_init = "" if config != "lora" else f"; LoRA init identical: {ours['lora_init'] == r['lora_init']}"
            print(f"{config}: ours vs {other}: step-1 loss diff {d1:.2e} (log 2 = {math.log(2):.7f}), "
                  f"step-2 loss diff {d2:.2e}{same_init}")
    for config in configs:
        print(f"{config}: ours/trl {ratio(config, 'trl'):.2f}x, ours/trl-pre {ratio(config, 'trl-pre'):.2f}x (total); "
              f"per CPU-s {ratio(config, 'trl', 'pairs_per_cpu_s'):.2f}x / "
              f"{ratio(config, 'trl-pre', 'pairs_per_cpu_s'):.2f}x; steps only "
              f"{ratio(config, 'trl', 'steps_pairs_per_s'):.2f}x / {ratio(config, 'trl-pre', 'steps_pairs_per_s'):.2f}x; "
              f"peak RSS ours/trl {_rss(results, config, 'trl'):.2f}x")

    bound = None
    if "full" in configs and "ours" in contenders:
        bound = run_child("bound", dict(base, lora=False, lr=args.lr), folder, "full-bound", profile=False)
        ours_tps = results["full", "ours"]["tokens_per_s"]
        print(f"full: ours {ours_tps:.0f} tokens/s in its steps; minimal-work bound (plain causal forward + "
              f"backward + AdamW over the same packed rows) {bound['tokens_per_s']:.0f} tokens/s: ours is "
              f"{ours_tps / bound['tokens_per_s']:.2f} of the bound; peak RSS per process: ours "
              f"{results['full', 'ours']['peak_rss_mb']:.0f} MB, trl "
              f"{results.get(('full', 'trl'), {}).get('peak_rss_mb', float('nan')):.0f} MB, trl-pre "
              f"{results.get(('full', 'trl-pre'), {}).get('peak_rss_mb', float('nan')):.0f} MB")
    for config in configs:
        if (config, "ours-store") in results:
            r = results[config, "ours-store"]
            print(f"{config}: ours from a prebuilt token store {r['pairs_per_s']:.3f} pairs/s (store found: "
                  f"{r['store_hit']}), ours building it {results[config, 'ours']['pairs_per_s']:.3f} pairs/s "
                  f"(store {results[config, 'ours']['store_s']:.1f} s)")

    if args.profile:
        for which in [w for w in args.profile.split(",") if w]:
            for config in configs:
                spec = dict(base, lora=config == "lora", lr=args.lora_lr if config == "lora" else args.lr)
                run_child(which, spec, folder, f"{config}-{which}-profile", profile=True)

    first = max(diffs1) if diffs1 else float("nan")
    second = max(d for d in diffs2) if diffs2 else float("nan")
    print(f"ratio={ratio('full', 'trl'):.2f} ratio_precompute={ratio('full', 'trl-pre'):.2f} "
          f"ratio_lora={ratio('lora', 'trl'):.2f} ratio_lora_precompute={ratio('lora', 'trl-pre'):.2f} "
          f"first_step_loss_diff={first:.1e} second_step_loss_diff={second:.1e} "
          f"cpu_ratio={ratio('full', 'trl', 'pairs_per_cpu_s'):.2f} "
          f"cpu_ratio_precompute={ratio('full', 'trl-pre', 'pairs_per_cpu_s'):.2f} "
          f"rss_ratio={_rss(results, 'full', 'trl'):.2f} store_speedup={ratio('full', 'ours-store', 'pairs_per_s') ** -1:.2f} "
          f"bound_fraction={results['full', 'ours']['tokens_per_s'] / bound['tokens_per_s'] if bound else float('nan'):.2f}")


def _rss(results: dict, config: str, other: str) -> float:
    a, b = results.get((config, "ours")), results.get((config, other))
    return a["peak_rss_mb"] / b["peak_rss_mb"] if a and b else float("nan")


if __name__ == "__main__":
    main()

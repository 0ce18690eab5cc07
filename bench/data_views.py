"""Benchmark: streaming reader + views vs. the load-everything loop of AlignX's formatting script.

For each size, synthetic AlignX records are written to JSONL (not timed), then each contender
runs in its own subprocess so its peak RSS (ru_maxrss) is its own:

* ours:  `read_examples` (streaming, validating) -> `build_view` ica and pba, alignx template,
         AlignX training-style history sampling; each prompt is consumed and dropped.
* naive: the style of AlignX `train/format_data.py`: load every record into a list first, then
         loop over it, sample history with `random`, build the PBA profile (its `get_profile`
         rule; by default in plain Python, faster than its per-record torch tensors, which
         `--baseline-profile torch` reproduces) and the ica / pba prompt strings by
         concatenation; no validation. Prompts are consumed and dropped, as ours are (AlignX
         keeps them all in a list).

Records/s are given per wall-clock second and per CPU-second of the measured process (the
latter is steadier on a shared machine). Usage:
    .venv/bin/python bench/data_views.py [--sizes 50000,200000] [--repeat 1] [--keep DIR]
The last line reads `ratio=<ours/naive records/s at the largest size> min_ratio=... cpu_ratio=...
rss_ratio=<our peak RSS, largest / smallest size> ...`.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_ours(path: str) -> tuple[int, int, tuple[float, float]]:
    from personalign.records.dimensions import load_dimensions
    from personalign.records.io import read_examples
    from personalign.views.build import ViewConfig, build_view

    ica = ViewConfig(view="ica", template="alignx", sample_history=True, seed=0)
    pba = ViewConfig(view="pba", template="alignx", sample_history=True, seed=0)
    load_dimensions()
    start = clocks()
    n = chars = 0
    for i, ex in enumerate(read_examples(path)):
        chars += len(build_view(ex, ica, None, i).prompt) + len(build_view(ex, pba, None, i).prompt)
        n += 1
    return n, chars, start


def run_naive(path: str, torch_profile: bool = False) -> tuple[int, int, tuple[float, float]]:
    from personalign.records.dimensions import load_dimensions

    if torch_profile:
        import torch

    features_persona = [(d.positive, d.negative) for d in load_dimensions()]

    def trans_persona(embedding):
        description = []
        for i, value in enumerate(embedding):
            if value == 1:
                description.append(features_persona[i][0])
            elif value == 0:
                description.append(features_persona[i][1])
        return ", ".join(description)

    def column_means(embedding):
        if torch_profile:  # AlignX's get_profile: torch.tensor(embedding).mean(dim=0, keepdim=True)
            return torch.tensor(embedding).mean(dim=0, keepdim=True).squeeze().tolist()
        return [sum(col) / len(embedding) for col in zip(*embedding)]

    def get_profile(history):
        embedding = [it["Preference Direction"] for it in history]
        mean = column_means(embedding)
        binary_emb = [1 if x >= 0.6 else 0 if x <= 0.4 else 0.5 for x in mean]
        profile = trans_persona(binary_emb)
        if profile == "":
            max_val, min_val = max(mean), min(mean)
            if 1 - max_val < min_val:
                binary_emb = [1 if x == max_val else 0.5 for x in mean]
            else:
                binary_emb = [0 if x == min_val else 0.5 for x in mean]
            profile = trans_persona(binary_emb)
        return profile

    start = clocks()
    with open(path) as f:
        data_list = [json.loads(line) for line in f]
    random.seed(0)
    n = chars = 0
    for item in data_list:
        task = f'{item["prompt"]}\n\n'
        num_ugc_to_keep = min(random.randint(0, 4), len(item["User-Generated Content"]))
        num_pair_to_keep = min(random.randint(0, 4), len(item["Pair-wise Comparative Feedback"]))
        if not (num_ugc_to_keep or num_pair_to_keep):
            num_ugc_to_keep = min(4, len(item["User-Generated Content"]))
            num_pair_to_keep = min(4, len(item["Pair-wise Comparative Feedback"]))
        random_ugc = random.sample(item["User-Generated Content"], num_ugc_to_keep)
        random_pair = random.sample(item["Pair-wise Comparative Feedback"], num_pair_to_keep)
        history = random_ugc + random_pair
        profile = get_profile(history)
        pba_prompt = (
            "<|start_header_id|>system<|end_header_id|>\n\nGenerate a task-specific response based on user preferences.\n<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\n"
            f"***Task***\n\n{task}"
            f"***User Preferences***\n\n{profile}\n\n***Response:***\n\n<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>"
        )
        ugcs = ""
        pairs = ""
        if num_ugc_to_keep > 0:
            ugcs = "**This person has commented on some posts:**\n\n"
            for i, it in enumerate(random_ugc):
                ugcs = f"{ugcs}{i + 1}. *Post:*\n{it['prompt']}\n\n*Comment:*\n{it['comment']}\n\n"
        if num_pair_to_keep > 0:
            pairs = "**This person has chosen or rejected comments on some posts:**\n\n"
            for i, it in enumerate(random_pair):
                pairs = (f"{pairs}{i + 1}. *Post:*\n{it['prompt']}\n\n*Chosen:*\n{it['chosen']}\n\n"
                         f"*Rejected:*\n{it['rejected']}\n\n")
        ica_prompt = (
            "<|start_header_id|>system<|end_header_id|>\n\nGenerate a task-specific response based on user historical behavior.\n<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\n"
            f"***Task***\n\n{task}"
            f"***Historical Behavior***\n\n{ugcs}{pairs}\n\n***Response:***\n\n<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>"
        )
        chars += len(ica_prompt) + len(pba_prompt)
        n += 1
    return n, chars, start


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def child(which: str, path: str) -> None:
    if which == "ours":
        n, chars, (wall, cpu) = run_ours(path)
    else:
        n, chars, (wall, cpu) = run_naive(path, torch_profile=which == "naive-torch")
    seconds, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(json.dumps({"records": n, "chars": chars, "seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak_rss_mb()}))


def measure(which: str, path: Path, repeat: int) -> dict:
    """Best of `repeat` runs of one contender in fresh subprocesses (peak RSS: the largest seen)."""
    best = None
    for _ in range(repeat):
        out = subprocess.run([sys.executable, __file__, "--child", which, str(path)], check=True,
                             capture_output=True, text=True).stdout
        res = json.loads(out.strip().splitlines()[-1])
        if best is None or res["seconds"] < best["seconds"]:
            best = {**res, "peak_rss_mb": max(res["peak_rss_mb"], best["peak_rss_mb"] if best else 0)}
    best["records_per_s"] = best["records"] / best["seconds"]
    best["records_per_cpu_s"] = best["records"] / best["cpu_seconds"]
    return best


def make_data(folder: Path, sizes: list[int]) -> dict[int, Path]:
    from personalign.curate.synth import synth_records
    from personalign.records.io import write_jsonl

    largest = folder / f"synth_{max(sizes)}.jsonl"
    if not largest.exists():
        print(f"generating {max(sizes)} records -> {largest}", flush=True)
        write_jsonl(synth_records(max(sizes), seed=0), largest)
    paths = {}
    for n in sizes:
        paths[n] = folder / f"synth_{n}.jsonl"
        if not paths[n].exists():
            with open(largest) as src, open(paths[n], "w") as dst:
                dst.writelines(itertools.islice(src, n))
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="50000,200000", help="comma-separated record counts")
    ap.add_argument("--repeat", type=int, default=1, help="runs per contender and size (best time is kept)")
    ap.add_argument("--keep", type=Path, help="keep the generated data in this folder (reused when present)")
    ap.add_argument("--baseline-profile", choices=("python", "torch"), default="python",
                    help="naive PBA profile: plain Python means (default, the faster baseline) or "
                         "AlignX's per-record torch tensors")
    ap.add_argument("--child", nargs=2, metavar=("WHICH", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    sizes = sorted(int(s) for s in args.sizes.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        paths = make_data(folder, sizes)
        results = {}
        for n in sizes:
            mb = os.path.getsize(paths[n]) / 1e6
            for which in ("naive", "ours"):
                child_name = "naive-torch" if which == "naive" and args.baseline_profile == "torch" else which
                r = results[which, n] = measure(child_name, paths[n], args.repeat)
                print(f"{which:5s} {n:>7d} records ({mb:5.0f} MB): {r['records_per_s']:6.0f} records/s "
                      f"({r['seconds']:6.1f} s wall), {r['records_per_cpu_s']:6.0f} records/CPU-s, "
                      f"peak RSS {r['peak_rss_mb']:5.0f} MB", flush=True)
    top, low = sizes[-1], sizes[0]
    ratios = {n: results["ours", n]["records_per_s"] / results["naive", n]["records_per_s"] for n in sizes}
    cpu = {n: results["ours", n]["records_per_cpu_s"] / results["naive", n]["records_per_cpu_s"] for n in sizes}
    rss_ratio = results["ours", top]["peak_rss_mb"] / results["ours", low]["peak_rss_mb"]
    naive_rss = results["naive", top]["peak_rss_mb"] / results["naive", low]["peak_rss_mb"]
    print("records/s ours/naive: " + ", ".join(f"{n}: {r:.2f}x" for n, r in ratios.items())
          + "; per CPU-second: " + ", ".join(f"{n}: {r:.2f}x" for n, r in cpu.items()))
    print(f"peak RSS {top}/{low}: ours {rss_ratio:.2f}x, naive {naive_rss:.2f}x")
    print(f"ratio={ratios[top]:.2f} min_ratio={min(ratios.values()):.2f} cpu_ratio={cpu[top]:.2f} "
          f"min_cpu_ratio={min(cpu.values()):.2f} rss_ratio={rss_ratio:.2f} "
          f"ours_rps={results['ours', top]['records_per_s']:.0f} naive_rps={results['naive', top]['records_per_s']:.0f} "
          f"ours_rss_mb={results['ours', top]['peak_rss_mb']:.0f} naive_rss_mb={results['naive', top]['peak_rss_mb']:.0f}")


if __name__ == "__main__":
    main()

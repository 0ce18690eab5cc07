"""Benchmark: building the token store vs TRL's dataset preparation for `DPOTrainer`, at two sizes.

Synthetic AlignX records (`data synth`, seeded) under the ICA view, embedded tokenizer:

* ours: `personalign.tokenstore.store.build_token_store` from the raw AlignX JSONL: reads and validates
  each record, renders the ICA prompt (dropping old history to fit `--max-length`, which counts
  tokens), tokenizes prompt and responses and streams the rows into the memory-mapped Arrow store,
  `--num-proc` worker processes.
* rendered (the same work as TRL's): `build_token_store` over TRL's own input file, the prompts
  already rendered, template `raw` (the prompt as given), view none: read, validate, tokenize prompt
  and responses, write the store.
* trl: `DPOTrainer._prepare_dataset` as shipped (`datasets.load_dataset("json")`, then its own
  `datasets.map` passes: EOS added, prompt / prompt+chosen / prompt+rejected tokenized, fully
  truncated rows filtered), `dataset_num_proc=--num-proc`, on the SAME prompts already rendered
  (the rendering is not timed for TRL: it has no ICA view).

Each contender runs in a fresh process; wall time and that process's peak RSS (`wait4`) are
measured. Sizes default to 10k and 40k records: the issue's 100k/400k take hours of rendering on
this 2-core machine; the ratio of sizes (4x) is the same.

    python bench/tokenize_scale.py [--sizes 10000,40000] [--num-proc 2] [--max-length 1024]

Last line: `ratio=<rendered/trl records/s at the larger size: the same work> end_to_end=<ours/trl>
rendered_rss_growth=<peak RSS larger/smaller> ours_rss_growth=... trl_rss_growth=... *_rps=...`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONTENDERS = ("rendered", "ours", "trl")


def child_ours(spec: dict) -> dict:
    from personalign.models.loading import load_tokenizer, resolve_model
    from personalign.tokenstore.store import StoreSpec, build_token_store
    from personalign.views.build import ViewConfig

    tokenizer = load_tokenizer(resolve_model(None))
    started = time.perf_counter()
    store, _ = build_token_store(spec["data"], tokenizer, StoreSpec(ViewConfig(view="ica"), spec["max_length"],
                                                                    need="pair"),
                                 num_proc=spec["num_proc"], progress=False, rebuild=True)
    return {"seconds": time.perf_counter() - started, "records": len(store), "tokens": store.counts["tokens"]}


def child_rendered(spec: dict) -> dict:
    """Ours on TRL's own input: the same rendered prompts (TRL's standard-format JSONL), template `raw`."""
    from personalign.models.loading import load_tokenizer, resolve_model
    from personalign.tokenstore.store import StoreSpec, build_token_store
    from personalign.views.build import ViewConfig

    tokenizer = load_tokenizer(resolve_model(None))
    started = time.perf_counter()
    store, _ = build_token_store(spec["trl_data"], tokenizer, StoreSpec(ViewConfig(view="none", template="raw"),
                                                                        spec["max_length"], need="pair"),
                                 num_proc=spec["num_proc"], progress=False, rebuild=True)
    return {"seconds": time.perf_counter() - started, "records": len(store), "tokens": store.counts["tokens"]}


def child_trl(spec: dict) -> dict:
    import datasets
    from trl import DPOConfig, DPOTrainer

    from personalign.models.loading import load_tokenizer, resolve_model

    datasets.disable_caching()
    datasets.disable_progress_bars()
    tokenizer = load_tokenizer(resolve_model(None))
    args = DPOConfig(output_dir=spec["scratch"], dataset_num_proc=spec["num_proc"], max_length=spec["max_length"],
                     report_to=[], bf16=False)
    stub = type("Stub", (), {"_tokenizer": tokenizer})()  # the one attribute `_prepare_dataset` reads
    started = time.perf_counter()
    dataset = datasets.load_dataset("json", data_files=spec["trl_data"], split="train")
    prepared = DPOTrainer._prepare_dataset(stub, dataset, tokenizer, args, "train")
    tokens = sum(len(p) + len(c) + len(r) for p, c, r in zip(prepared["prompt_ids"], prepared["chosen_ids"],
                                                            prepared["rejected_ids"]))
    return {"seconds": time.perf_counter() - started, "records": len(prepared), "tokens": tokens}


def run_child(which: str, spec: dict) -> dict:
    """Run one contender in a fresh process; its result plus its peak RSS (MiB)."""
    out = Path(spec["scratch"]) / f"{which}.json"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, __file__, "--child", which, json.dumps(spec | {"out": str(out)})],
                            env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{which} failed with exit status {os.waitstatus_to_exitcode(status)}")
    return json.loads(out.read_text()) | {"peak_rss_mib": usage.ru_maxrss / 1024}


def prepare(folder: Path, n: int, max_length: int) -> tuple[Path, Path]:
    """Synthetic AlignX records, and the same records rendered under ICA as TRL's prompt/chosen/rejected."""
    from personalign.curate.synth import synth_records
    from personalign.models.loading import load_tokenizer, resolve_model
    from personalign.records.io import read_examples, write_jsonl
    from personalign.views.build import ViewConfig, render_views

    data = folder / f"alignx-{n}.jsonl"
    write_jsonl(synth_records(n, seed=0), data)
    view = ViewConfig(view="ica", max_length=max_length)
    rows = ({"prompt": r.prompt, "chosen": r.responses[0], "rejected": r.responses[1]}
            for r in render_views(read_examples(data), view, load_tokenizer(resolve_model(None))))
    trl_data = folder / f"trl-{n}.jsonl"
    write_jsonl(rows, trl_data)
    return data, trl_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,40000")
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("spec", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.spec)
        result = {"ours": child_ours, "rendered": child_rendered, "trl": child_trl}[args.child](spec)
        Path(spec["out"]).write_text(json.dumps(result))
        return
    sizes = sorted(int(s) for s in args.sizes.split(","))
    results: dict[tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            folder = Path(tmp) / str(n)
            folder.mkdir()
            data, trl_data = prepare(folder, n, args.max_length)
            spec = {"data": str(data), "trl_data": str(trl_data), "num_proc": args.num_proc,
                    "max_length": args.max_length, "scratch": str(folder)}
            for which in CONTENDERS:
                r = results[which, n] = run_child(which, spec)
                print(f"{which:8s} n={n:>7,}: {r['records'] / r['seconds']:8.1f} records/s "
                      f"({r['seconds']:.1f} s, {r['tokens']:,} tokens), peak RSS {r['peak_rss_mib']:.0f} MiB",
                      flush=True)
    small, large = sizes[0], sizes[-1]
    rps = {w: results[w, large]["records"] / results[w, large]["seconds"] for w in CONTENDERS}
    growth = {w: results[w, large]["peak_rss_mib"] / results[w, small]["peak_rss_mib"] for w in CONTENDERS}
    print(f"ratio={rps['rendered'] / rps['trl']:.3f} end_to_end={rps['ours'] / rps['trl']:.3f} "
          f"rendered_rss_growth={growth['rendered']:.3f} ours_rss_growth={growth['ours']:.3f} "
          f"trl_rss_growth={growth['trl']:.3f} rendered_rps={rps['rendered']:.1f} ours_rps={rps['ours']:.1f} "
          f"trl_rps={rps['trl']:.1f} sizes={small},{large} num_proc={args.num_proc}")


if __name__ == "__main__":
    main()

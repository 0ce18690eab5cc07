"""Benchmark: `personalign train` peak memory against the number of records (the token store at work).

Synthetic AlignX records (`data synth`, seeded) at two sizes; `personalign train loss=sft max_steps=2`
(no reference pass) with the embedded model, each in a fresh process, from a cold token store
(built inside the timed run). Reports each run's wall time, store build time and the peak RSS of
the process tree (`wait4`). Memory that held every record in Python would grow ~10x between the
default sizes; the store keeps it flat.

    PERSONALIGN_HOME=.cache/personalign-test python bench/train_scale.py [--sizes 20000,200000] [--view none]

Last line: `ratio=<peak RSS small / peak RSS large; 1.0 = flat, higher is better> rss_small_mib=...
rss_large_mib=... records=...`.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(args: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS MiB of the process tree) of one command."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr.read().decode()[-3000:]}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,200000")
    parser.add_argument("--view", default="none")
    parser.add_argument("--num-proc", type=int, default=1)
    args = parser.parse_args()
    from personalign.curate.synth import synth_records
    from personalign.records.io import write_jsonl

    sizes = sorted(int(s) for s in args.sizes.split(","))
    rss = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            folder = Path(tmp) / str(n)
            folder.mkdir()
            data = folder / "alignx.jsonl"
            write_jsonl(synth_records(n, seed=0), data)
            seconds, rss[n] = run([sys.executable, "-m", "personalign", "train", f"data={data}", "loss=sft",
                                   "max_steps=2", "per_device_train_batch_size=2", "max_length=512",
                                   f"view.view={args.view}", f"dataset_num_proc={args.num_proc}", "report_to=none",
                                   "save_steps=1000000", f"output_dir={folder / 'run'}"])
            print(f"n={n:>8,}: train sft 2 steps from a cold token store in {seconds:.1f} s, "
                  f"peak RSS {rss[n]:.0f} MiB ({data.stat().st_size / 2**20:.0f} MiB of records)", flush=True)
    small, large = sizes[0], sizes[-1]
    print(f"ratio={rss[small] / rss[large]:.3f} rss_small_mib={rss[small]:.0f} rss_large_mib={rss[large]:.0f} "
          f"growth={rss[large] / rss[small]:.3f} records={small},{large} view={args.view}")


if __name__ == "__main__":
    main()

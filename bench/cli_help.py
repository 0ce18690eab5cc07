"""Benchmark: `personalign --help` with lazy command modules vs. the same CLI with every command
module imported first (how the CLI was built before: each module imports torch, transformers and
the library behind it at the top).

* ours:     `personalign --help` as installed (`personalign.cli.LazyGroup`: commands listed by name,
            imported only when one runs).
* baseline: the same app after `load_command` of every command (all modules imported), then `--help`.

Each run is a fresh interpreter (`python -c ...`), the two alternated --repeats times; medians.

Usage: .venv/bin/python bench/cli_help.py [--repeats 7]
The last line reads `ratio=<baseline/ours seconds> ours_s=<median> baseline_s=<median> under_1s=<bool>`.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

LAZY = "from personalign.cli import app; app(['--help'])"
EAGER = ("from personalign.cli import COMMANDS, app, load_command; [load_command(n) for n in COMMANDS]; "
         "app(['--help'])")


def seconds(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    seconds(LAZY), seconds(EAGER)  # warm the file cache
    ours, base = [], []
    for _ in range(args.repeats):
        ours.append(seconds(LAZY))
        base.append(seconds(EAGER))
    o, b = statistics.median(ours), statistics.median(base)
    print(f"ours (lazy) {o:.3f} s, baseline (eager imports) {b:.3f} s over {args.repeats} alternated runs")
    print(f"ratio={b / o:.2f} ours_s={o:.3f} baseline_s={b:.3f} under_1s={o < 1.0}")


if __name__ == "__main__":
    main()

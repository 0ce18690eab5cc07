"""Benchmark: `personalign ... --help` of every command and subcommand, each in a fresh interpreter,
against the CLI as it was built before (every command module imported first, each bringing torch,
transformers and the library behind it).

* ours:     `personalign --help`, then `personalign <command> [<subcommand>] --help` for every command
            (command modules import only typer, rich, pydantic and the stages' vocabularies; torch,
            transformers, accelerate, datasets and pyarrow load in the command's body).
* baseline: the same app after importing the engine modules the commands run (`personalign.train.loop`,
            `personalign.eval.alignment`, `personalign.users.train`, ...), then `--help`.

Runs are alternated --repeats times; medians. Every help is also checked to import none of torch,
transformers, accelerate, datasets, pyarrow.

Usage: .venv/bin/python bench/cli_help.py [--repeats 3]
The last line reads `ratio=<baseline / slowest help> slowest_s=<median of the slowest help> ...`.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "transformers", "accelerate", "datasets", "pyarrow")
ENGINE = ("personalign.train.loop", "personalign.eval.alignment", "personalign.eval.generate",
          "personalign.users.train", "personalign.persona.infer", "personalign.quickstart")


def command_lines() -> list[list[str]]:
    """[] (the root), then every command, then every subcommand of every group."""
    from personalign.cli import COMMANDS, load_command

    lines: list[list[str]] = [[]]
    for name in COMMANDS:
        lines.append([name])
        command = load_command(name)
        lines += [[name, sub] for sub in getattr(command, "commands", {})]
    return lines


def help_code(argv: list[str], preload: tuple[str, ...] = ()) -> str:
    imports = "".join(f"import {m}; " for m in preload)
    return (f"{imports}import sys\nfrom personalign.cli import app\n"
            f"try:\n    app({[*argv, '--help']!r})\nexcept SystemExit:\n    pass\n"
            f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)")


def seconds(code: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, check=True)
    heavy = next((line[6:] for line in done.stderr.splitlines() if line.startswith("HEAVY=")), "")
    return time.perf_counter() - started, heavy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    lines = command_lines()
    seconds(help_code([])), seconds(help_code([], ENGINE))  # warm the file cache
    ours: dict[str, list[float]] = {" ".join(argv) or "(root)": [] for argv in lines}
    base: list[float] = []
    heavy_seen: dict[str, str] = {}
    for _ in range(args.repeats):
        for argv in lines:
            took, heavy = seconds(help_code(argv))
            ours[" ".join(argv) or "(root)"].append(took)
            if heavy:
                heavy_seen[" ".join(argv) or "(root)"] = heavy
        base.append(seconds(help_code([], ENGINE))[0])
    medians = {name: statistics.median(v) for name, v in ours.items()}
    for name, value in sorted(medians.items(), key=lambda kv: -kv[1]):
        print(f"{value:6.3f} s  personalign {name} --help{'  imports ' + heavy_seen[name] if name in heavy_seen else ''}")
    slowest = max(medians, key=medians.get)
    b = statistics.median(base)
    print(f"{len(medians)} helps; slowest: personalign {slowest} --help {medians[slowest]:.3f} s; baseline (engine "
          f"imported first) {b:.3f} s; medians of {args.repeats} alternated runs")
    print(f"ratio={b / medians[slowest]:.2f} slowest_s={medians[slowest]:.3f} baseline_s={b:.3f} "
          f"median_s={statistics.median(medians.values()):.3f} all_under_1s={max(medians.values()) < 1.0} "
          f"heavy_imports={len(heavy_seen)}")


if __name__ == "__main__":
    main()

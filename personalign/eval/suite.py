"""The AlignX evaluation suite in one call: every benchmark file under a directory, each scored with
the published protocol (`AccuracyConfig(protocol="alignx")`), one paper-style table.

Benchmark files are the AlignX releases' JSON arrays (P-Soups's three files, UF-P-4's four,
PRISM, AlignX-test) or any `.json`/`.jsonl`/`.parquet` file of AlignX records, found recursively
and named by their path relative to the directory (suffix dropped). Each file's result goes to
`<out>/<name>/` (accuracy.json, accuracy.md, scores.jsonl); a file whose accuracy.json was written
for the same settings is not scored again, so a killed suite resumes at the file it stopped in.
The table is `<out>/suite.md` and `<out>/suite.json`.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, PositiveInt

from personalign.errors import UserError
from personalign.eval.alignment import AccuracyConfig, evaluate_accuracy, write_accuracy
from personalign.eval.names import SuiteMethod
from personalign.files import check_output_dir, write_json, write_text
from personalign.metrics import Estimate
from personalign.models.loading import check_model_dir, process_state
from personalign.models.settings import ScoringModelSettings

SUFFIXES = (".json", ".jsonl", ".parquet")
SUITE_MD, SUITE_JSON = "suite.md", "suite.json"




class SuiteConfig(ScoringModelSettings):
    """`personalign eval suite` settings."""

    method: SuiteMethod
    data_dir: str
    out: str = "results/suite"
    policy: str | None = None
    reference: str | None = None
    limit: PositiveInt | None = None
    max_prompt_tokens: PositiveInt = 8192 - 512 - 1  # AlignX's evaluation scripts: the last 7679 prompt tokens
    max_tokens_per_batch: PositiveInt = 8192
    n_boot: int = Field(1000, gt=0)
    seed: int = 0


@dataclass(slots=True)
class SuiteRow:
    benchmark: str
    file: str
    mode: str
    accuracy: Estimate
    reused: bool


def find_benchmarks(data_dir: str | os.PathLike) -> list[tuple[str, Path]]:
    """(name, path) of every record file under `data_dir`, sorted by name; hidden folders are skipped."""
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory of benchmark files")
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and path.suffix in SUFFIXES and not any(p.startswith(".") for p in rel.parts):
            found.append((rel.with_suffix("").as_posix(), path))
    if not found:
        raise FileNotFoundError(f"{root}: no benchmark files ({', '.join(SUFFIXES)})")
    return found


def file_config(cfg: SuiteConfig, path: Path) -> AccuracyConfig:
    """The published AlignX protocol for one benchmark file."""
    return AccuracyConfig(data=str(path), policy=cfg.policy, reference=cfg.reference, view={"view": cfg.method},
                          protocol="alignx", limit=cfg.limit, max_prompt_tokens=cfg.max_prompt_tokens,
                          max_tokens_per_batch=cfg.max_tokens_per_batch, n_boot=cfg.n_boot, seed=cfg.seed,
                          **cfg.load_kwargs())


def _finished(out: Path, acc: AccuracyConfig) -> dict | None:
    """The stored result of a file when it was written for exactly these settings."""
    try:
        stored = json.loads((out / "accuracy.json").read_text())
    except (OSError, ValueError):
        return None
    keys = acc.model_dump(mode="json")
    same = all(stored.get("config", {}).get(k) == v for k, v in keys.items() if k not in ("policy", "reference"))
    return stored if same and stored.get("suite_models") == [acc.policy, acc.reference] else None


def run_suite(cfg: SuiteConfig, on_file: Callable[[str, bool], None] | None = None, *,
              overwrite: bool = False) -> list[SuiteRow]:
    """Score every benchmark under `cfg.data_dir` (resuming finished ones) and write the suite table.
    Checked first: the benchmark directory, both models and the output directory (files that are not
    the suite's own need `overwrite`)."""
    if not Path(cfg.data_dir).is_dir():
        raise UserError(f"{cfg.data_dir} is not a directory", option="--data-dir")
    check_model_dir(cfg.policy, option="--policy")
    check_model_dir(cfg.reference, option="--reference")
    own = (SUITE_MD, SUITE_JSON, *(name for name, _ in find_benchmarks(cfg.data_dir)))
    check_output_dir(cfg.out, inputs=[cfg.data_dir], own=own, overwrite=overwrite)
    out_root = Path(cfg.out)
    state = process_state()
    rows = []
    for name, path in find_benchmarks(cfg.data_dir):
        acc = file_config(cfg, path)
        out = out_root / name
        stored = _finished(out, acc)
        if stored is None:
            result = evaluate_accuracy(acc)
            if state.is_main_process:
                write_accuracy(result, out, extra={"suite_models": [acc.policy, acc.reference]})
            estimate, mode = result.estimates["overall"], result.mode
        else:
            estimate, mode = Estimate(**stored["accuracy"]["overall"]), stored["mode"]
        rows.append(SuiteRow(name, str(path), mode, estimate, stored is not None))
        if on_file is not None:
            on_file(name, stored is not None)
    if state.is_main_process:
        write_suite(cfg, rows)
    return rows


def suite_markdown(cfg: SuiteConfig, rows: list[SuiteRow]) -> str:
    lines = [f"### AlignX evaluation suite: {cfg.method.upper()}", "",
             f"Policy `{cfg.policy or 'default'}`, reference `{cfg.reference or cfg.policy or 'default'}`; AlignX "
             "protocol (policy under its method's `alignx-eval` layout, reference under the ICA `alignx-eval` "
             f"layout with all history); prompts cut to their last {cfg.max_prompt_tokens} tokens"
             + (f"; first {cfg.limit} records per file" if cfg.limit else "") + ".", "",
             "| benchmark | n | accuracy | 95% CI | metric |", "|---|---:|---:|---|---|"]
    for r in rows:
        e = r.accuracy
        metric = "alignment" if r.mode == "alignment" else "raw (policy = reference)"
        lines.append(f"| {r.benchmark} | {e.n} | {e.value:.3f} | [{e.low:.3f}, {e.high:.3f}] | {metric} |")
    return "\n".join(lines) + "\n"


def write_suite(cfg: SuiteConfig, rows: list[SuiteRow]) -> tuple[Path, Path]:
    out = Path(cfg.out)
    md, js = out / SUITE_MD, out / SUITE_JSON
    write_text(md, suite_markdown(cfg, rows))
    payload = {"kind": "alignx-suite", "config": cfg.model_dump(mode="json"),
               "benchmarks": [{"benchmark": r.benchmark, "file": r.file, "mode": r.mode,
                               "accuracy": r.accuracy.as_dict()} for r in rows]}
    write_json(js, payload)
    return md, js

"""The bad-input campaign: every command, every class of careless input.

Each case runs the real CLI in-process on a fresh copy of a workspace of inputs and earlier outputs,
and asserts: exit code 2; stderr is exactly one line `error: ...` naming the file or option; no
traceback anywhere; and every file of the workspace byte-identical afterwards (nothing written,
nothing half-written, nothing destroyed). Every case fails before a model loads.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from personalign.cli import app
from personalign.curate.ranking import rank_split
from personalign.curate.synth import synth_ranking, synth_records

runner = CliRunner()


def _jsonl(path: Path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fake_model(path: Path, arch: str) -> None:
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"architectures": [arch], "model_type": "llama"}))
    (path / "model.safetensors").write_bytes(b"not really weights")
    (path / "tokenizer.json").write_text("{}")


def build_workspace(ws: Path) -> None:
    """Inputs and earlier outputs every case may point at."""
    ws.mkdir(parents=True, exist_ok=True)
    good = list(synth_records(6, seed=0))
    _jsonl(ws / "good.jsonl", good)
    pairs = [{"prompt": f"Question {i}?", "chosen": f"Good answer {i}.", "rejected": f"Bad {i}."} for i in range(4)]
    _jsonl(ws / "pairs.jsonl", pairs)
    _jsonl(ws / "personas.jsonl", [{**p, "chosen_persona": "The user likes detail.",
                                    "rejected_persona": "The user likes brevity."} for p in pairs])
    _jsonl(ws / "ranking.jsonl", synth_ranking(8, k=4, seed=0))
    _jsonl(ws / "invalid.jsonl", [{"prompt": "p", "rejected": "r"}, {"prompt": "", "chosen": "a", "rejected": "b"}])
    (ws / "empty.jsonl").write_bytes(b"")
    (ws / "torn.jsonl").write_text(json.dumps(pairs[0]) + "\n" + '{"prompt": "p", "chos', encoding="utf-8")
    (ws / "data.csv").write_text("prompt,chosen,rejected\n")
    (ws / "blocker").write_text("a regular file\n")
    (ws / "emptydir").mkdir()
    (ws / "junkmodel").mkdir()
    (ws / "junkmodel" / "weights.txt").write_text("junk")
    (ws / "junkmodel" / "notes.md").write_text("junk")
    (ws / "noweights").mkdir()
    (ws / "noweights" / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (ws / "badconfig").mkdir()
    (ws / "badconfig" / "config.json").write_text('{"architectures": ["Llama')
    (ws / "badconfig" / "model.safetensors").write_bytes(b"x")
    _fake_model(ws / "seqcls", "LlamaForSequenceClassification")
    _fake_model(ws / "causal", "LlamaForCausalLM")
    (ws / "foreign").mkdir()
    (ws / "foreign" / "notes.txt").write_text("someone else's file\n")
    _fake_model(ws / "othermodel", "LlamaForCausalLM")
    (ws / "adapter").mkdir()
    (ws / "adapter" / "adapter_config.json").write_text('{"base_model_name_or_pa')
    ck = ws / "run" / "checkpoint-2"
    ck.mkdir(parents=True)
    (ck / "trainer_state.json").write_text('{"step": 2, "glob')
    (ws / "run" / "train_config.yaml").write_text("data: good.jsonl\n")
    (ws / "run" / "metrics.jsonl").write_text('{"step": 1, "train/loss": 0.7}\n')
    ck3 = ws / "run3" / "checkpoint-3"
    ck3.mkdir(parents=True)
    (ck3 / "trainer_state.json").write_text(json.dumps({"step": 3, "global_batch": 8, "records": 6}))
    (ck3 / "train_config.yaml").write_text("data: [unclosed\n")
    for name in ("base", "test"):
        run = ws / "gens" / name
        run.mkdir(parents=True)
        _jsonl(run / "generations.jsonl", [{"index": i, "prompt": p["prompt"], "response": f"{name} {i}"}
                                          for i, p in enumerate(pairs)])
        (run / "generation.json").write_text(json.dumps({"view": {"view": "none"}, "counts": {"records": 4}}))
    (ws / "gens" / "torn").mkdir()
    (ws / "gens" / "torn" / "generations.jsonl").write_text('{"index": 0, "prompt": "Question 0?", "resp')
    (ws / "gens" / "noresp").mkdir()
    _jsonl(ws / "gens" / "noresp" / "generations.jsonl", [{"index": 0, "prompt": "Question 0?"}])
    (ws / "results" / "corrupt").mkdir(parents=True)
    (ws / "results" / "corrupt" / "accuracy.json").write_text('{"mode": "raw", "accur')
    (ws / "results" / "wrongtype").mkdir()
    (ws / "results" / "wrongtype" / "accuracy.json").write_text(
        '{"mode": "raw", "accuracy": {"all": {"value": "high", "low": 0.1, "high": 0.9, "n": 4}}}')
    (ws / "results" / "judgekeys").mkdir()
    (ws / "results" / "judgekeys" / "judge.json").write_text('{"judge": "j", "rubrics": {}}')
    (ws / "results" / "emptyrun").mkdir()
    (ws / "results" / "junkmetrics").mkdir()
    (ws / "results" / "junkmetrics" / "metrics.jsonl").write_text("not json\n")
    (ws / "suite").mkdir()
    _jsonl(ws / "suite" / "bench.jsonl", good)
    (ws / "broken.yaml").write_text("learning_rate: [1e-5\n")
    (ws / "list.yaml").write_text("- a\n- b\n")
    (ws / "prompt.yaml").write_text("system: [unclosed\n")
    rank_split(ws / "ranking.jsonl", [2], ws / "split")


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# (id, arguments, fragments that must appear in the one-line message). {ws} is the workspace, {port} a
# closed loopback port. Grouped by class: data destroyed, tracebacks (unwritable outputs, corrupt
# files, bad options, junk models, unreachable backends), silent success on empty input.
OUT_IS_INPUT = [
    ("build-views-out-is-input", "data build-views {ws}/good.jsonl --out {ws}/good.jsonl", ["would overwrite the input", "good.jsonl"]),
    ("build-views-bad-dimensions", "data build-views {ws}/good.jsonl --view pba --dimensions {ws}/torn.jsonl --out {ws}/v.jsonl",
     ["dimensions", "torn.jsonl", "not a dimension table"]),
    ("build-views-rejects-is-input", "data build-views {ws}/good.jsonl --out {ws}/v.jsonl --on-invalid skip --rejects {ws}/good.jsonl",
     ["--rejects", "good.jsonl"]),
    ("build-views-rejects-is-out", "data build-views {ws}/good.jsonl --out {ws}/v.jsonl --on-invalid skip --rejects {ws}/v.jsonl",
     ["--rejects", "v.jsonl"]),
    ("select-out-is-input", "data select {ws}/ranking.jsonl --size 2 --out {ws}/ranking.jsonl",
     ["would overwrite the input", "ranking.jsonl"]),
    ("stats-json-is-input", "data stats {ws}/good.jsonl --json {ws}/good.jsonl", ["--json", "good.jsonl"]),
    ("validate-rejects-is-input", "data validate {ws}/good.jsonl --on-invalid skip --rejects {ws}/good.jsonl", ["--rejects", "good.jsonl"]),
    ("diversity-json-is-input", "data diversity {ws}/ranking.jsonl --json {ws}/ranking.jsonl", ["--json", "ranking.jsonl"]),
    ("diversity-plot-is-input", "data diversity {ws}/ranking.jsonl --plot {ws}/ranking.jsonl", ["--plot", "ranking.jsonl"]),
    ("rank-split-over-input", "data rank-split {ws}/split/ranking.k2.jsonl --k 2 --out-dir {ws}/split",
     ["holds the input", "ranking.k2.jsonl"]),
    ("subsets-into-input-dir", "data subsets {ws}/split --budget 4 --k 2 --out-dir {ws}/split", ["would overwrite the input", "split"]),
    ("infer-out-is-input", "persona infer --data {ws}/pairs.jsonl --out {ws}/pairs.jsonl", ["would overwrite the input", "pairs.jsonl"]),
    ("infer-cache-is-input", "persona infer --data {ws}/pairs.jsonl --out {ws}/p.jsonl --cache {ws}/pairs.jsonl",
     ["--cache", "pairs.jsonl"]),
    ("persona-accuracy-out-is-input", "persona accuracy --data {ws}/personas.jsonl --out {ws}/personas.jsonl",
     ["would overwrite the input", "personas.jsonl"]),
    ("prefer-out-is-input", "persona prefer --data {ws}/personas.jsonl --out {ws}/personas.jsonl",
     ["would overwrite the input", "personas.jsonl"]),
    ("saliency-out-is-input", "persona saliency --data {ws}/personas.jsonl --out {ws}/personas.jsonl",
     ["would overwrite the input", "personas.jsonl"]),
    ("retrieve-out-is-data", "persona retrieve --train {ws}/personas.jsonl --data {ws}/pairs.jsonl --out {ws}/pairs.jsonl",
     ["would overwrite the input", "pairs.jsonl"]),
    ("retrieve-out-is-train", "persona retrieve --train {ws}/personas.jsonl --data {ws}/pairs.jsonl --out {ws}/personas.jsonl",
     ["would overwrite the input", "personas.jsonl"]),
    ("reward-out-is-input", "eval reward {ws}/gens/base/generations.jsonl --model {ws}/seqcls --out {ws}/gens/base/generations.jsonl",
     ["would overwrite the input", "generations.jsonl"]),
    ("generate-over-its-input", "eval generate --data {ws}/gens/base/generations.jsonl --out {ws}/gens/base",
     ["holds the input", "generations.jsonl"]),
    ("judge-into-base-run", "eval judge --base {ws}/gens/base --test {ws}/gens/test --out {ws}/gens/base",
     ["did not write", "--overwrite"]),
    ("accuracy-into-foreign-dir", "eval accuracy --data {ws}/good.jsonl --out {ws}/foreign", ["did not write", "notes.txt"]),
    ("generate-into-foreign-dir", "eval generate --data {ws}/good.jsonl --out {ws}/foreign", ["did not write", "notes.txt"]),
    ("suite-into-data-dir", "eval suite --method ica --data-dir {ws}/suite --out {ws}/suite", ["would overwrite the input", "suite"]),
    ("suite-into-foreign-dir", "eval suite --method ica --data-dir {ws}/suite --out {ws}/foreign", ["did not write", "notes.txt"]),
    ("export-onto-source", "export {ws}/othermodel --out {ws}/othermodel", ["outside the exported directory", "othermodel"]),
    ("export-into-another-model", "export {ws}/causal --out {ws}/othermodel", ["did not write", "--overwrite", "othermodel"]),
    ("export-inside-source", "export {ws}/causal --out {ws}/causal/sub", ["outside the exported directory"]),
    ("train-into-foreign-dir", "train data={ws}/good.jsonl output_dir={ws}/foreign", ["did not write", "foreign"]),
    ("train-output-is-data", "train data={ws}/good.jsonl output_dir={ws}/good.jsonl", ["output_dir is a file", "good.jsonl"]),
    ("quickstart-into-foreign-dir", "quickstart --out {ws}/foreign", ["did not write", "notes.txt"]),
    ("rank-split-into-foreign-dir", "data rank-split {ws}/ranking.jsonl --k 2 --out-dir {ws}/foreign", ["did not write", "notes.txt"]),
    ("subsets-into-foreign-dir", "data subsets {ws}/split --budget 4 --k 2 --out-dir {ws}/foreign", ["did not write", "notes.txt"]),
]

UNDER_A_FILE = [
    (f"{name}-under-a-file", args, ["it is a file", "blocker"]) for name, args in [
        ("build-views", "data build-views {ws}/good.jsonl --out {ws}/blocker/v.jsonl"),
        ("synth", "data synth --n 3 --out {ws}/blocker/s.jsonl"),
        ("stats-json", "data stats {ws}/good.jsonl --json {ws}/blocker/s.json"),
        ("validate-rejects", "data validate {ws}/good.jsonl --on-invalid skip --rejects {ws}/blocker/r.jsonl"),
        ("rank-split", "data rank-split {ws}/ranking.jsonl --k 2 --out-dir {ws}/blocker/split"),
        ("subsets", "data subsets {ws}/split --budget 4 --k 2 --out-dir {ws}/blocker/sub"),
        ("diversity-json", "data diversity {ws}/ranking.jsonl --json {ws}/blocker/d.json"),
        ("diversity-plot", "data diversity {ws}/ranking.jsonl --plot {ws}/blocker/d.png"),
        ("select", "data select {ws}/ranking.jsonl --size 2 --out {ws}/blocker/s.jsonl"),
        ("infer", "persona infer --data {ws}/pairs.jsonl --out {ws}/blocker/p.jsonl"),
        ("persona-accuracy", "persona accuracy --data {ws}/personas.jsonl --out {ws}/blocker/a.json"),
        ("prefer", "persona prefer --data {ws}/personas.jsonl --out {ws}/blocker/p.json"),
        ("saliency", "persona saliency --data {ws}/personas.jsonl --out {ws}/blocker/s.json"),
        ("retrieve", "persona retrieve --train {ws}/personas.jsonl --data {ws}/pairs.jsonl --out {ws}/blocker/r.jsonl"),
        ("accuracy", "eval accuracy --data {ws}/good.jsonl --out {ws}/blocker/acc"),
        ("generate", "eval generate --data {ws}/good.jsonl --out {ws}/blocker/gen"),
        ("judge", "eval judge --base {ws}/gens/base --test {ws}/gens/test --out {ws}/blocker/judge"),
        ("reward", "eval reward {ws}/gens/base/generations.jsonl --model {ws}/seqcls --out {ws}/blocker/r.json"),
        ("suite", "eval suite --method ica --data-dir {ws}/suite --out {ws}/blocker/suite"),
        ("report", "report {ws}/gens --out {ws}/blocker/report.html"),
        ("export", "export {ws}/causal --out {ws}/blocker/exported"),
        ("train", "train data={ws}/good.jsonl output_dir={ws}/blocker/run"),
        ("quickstart", "quickstart --out {ws}/blocker/qs"),
    ]
]

WRONG_KIND_OF_OUTPUT = [
    ("synth-out-is-a-dir", "data synth --n 3 --out {ws}/emptydir", ["is a directory", "emptydir"]),
    ("build-views-out-is-a-dir", "data build-views {ws}/good.jsonl --out {ws}/emptydir", ["is a directory", "emptydir"]),
    ("report-out-is-a-dir", "report {ws}/gens --out {ws}/emptydir", [".html", "emptydir"]),
    ("report-out-not-html", "report {ws}/gens --out {ws}/report.json", [".html", "report.json"]),
    ("accuracy-out-is-a-file", "eval accuracy --data {ws}/good.jsonl --out {ws}/blocker", ["is a file", "blocker"]),
    ("generate-out-is-a-file", "eval generate --data {ws}/good.jsonl --out {ws}/blocker", ["is a file", "blocker"]),
    ("rank-split-out-is-a-file", "data rank-split {ws}/ranking.jsonl --k 2 --out-dir {ws}/blocker", ["is a file", "blocker"]),
    ("synth-unknown-suffix", "data synth --n 3 --out {ws}/s.csv", [".csv", "s.csv"]),
    ("select-unknown-suffix", "data select {ws}/ranking.jsonl --size 2 --out {ws}/s.txt", [".txt", "s.txt"]),
    ("infer-unknown-suffix", "persona infer --data {ws}/pairs.jsonl --out {ws}/p.txt", [".txt", "p.txt"]),
]

MISSING_OR_UNREADABLE_INPUT = [
    ("stats-missing", "data stats {ws}/missing.jsonl", ["missing.jsonl"]),
    ("stats-unsupported-type", "data stats {ws}/data.csv", ["unsupported file type", "data.csv"]),
    ("stats-empty-file", "data stats {ws}/empty.jsonl", ["file is empty", "empty.jsonl"]),
    ("build-views-missing", "data build-views {ws}/missing.jsonl --out {ws}/v.jsonl", ["missing.jsonl"]),
    ("build-views-torn", "data build-views {ws}/torn.jsonl --out {ws}/v.jsonl", ["torn.jsonl:2"]),
    ("accuracy-missing-data", "eval accuracy --data {ws}/missing.jsonl --out {ws}/acc", ["no such file", "missing.jsonl"]),
    ("accuracy-empty-data", "eval accuracy --data {ws}/empty.jsonl --out {ws}/acc", ["file is empty", "empty.jsonl"]),
    ("generate-missing-data", "eval generate --data {ws}/missing.jsonl --out {ws}/gen", ["no such file", "missing.jsonl"]),
    ("generate-missing-shots", "eval generate --data {ws}/personas.jsonl --view persona --template plain --few-shot 1 --shots-from "
                               "{ws}/nope.jsonl --out {ws}/gen",
     ["nope.jsonl"]),
    ("infer-missing-data", "persona infer --data {ws}/missing.jsonl --out {ws}/p.jsonl", ["missing.jsonl"]),
    ("persona-accuracy-missing", "persona accuracy --data {ws}/missing.jsonl", ["missing.jsonl"]),
    ("retrieve-missing-train", "persona retrieve --train {ws}/missing.jsonl --data {ws}/pairs.jsonl --out {ws}/r.jsonl",
     ["--train", "missing.jsonl"]),
    ("train-missing-data", "train data={ws}/missing.jsonl output_dir={ws}/newrun", ["no such file", "missing.jsonl"]),
    ("train-missing-eval-data", "train data={ws}/good.jsonl eval_data={ws}/missing.jsonl output_dir={ws}/newrun",
     ["eval_data", "missing.jsonl"]),
    ("export-missing", "export {ws}/missing --out {ws}/exported", ["not a directory", "missing"]),
    ("export-nothing-to-export", "export {ws}/emptydir --out {ws}/exported", ["no final model", "emptydir"]),
    ("judge-missing-base", "eval judge --base {ws}/gens/none --test {ws}/gens/test --out {ws}/judge", ["no generations", "--base"]),
    ("judge-torn-generation-row", "eval judge --base {ws}/gens/torn --test {ws}/gens/test --out {ws}/judge",
     ["not a complete JSON row", "generations.jsonl:1"]),
    ("judge-row-without-response", "eval judge --base {ws}/gens/noresp --test {ws}/gens/test --out {ws}/judge",
     ["generations.jsonl:1", "response"]),
    ("reward-missing-file", "eval reward {ws}/missing.jsonl --model {ws}/seqcls", ["missing.jsonl"]),
    ("report-missing-dir", "report {ws}/nope --out {ws}/r.html", ["not a directory", "nope"]),
    ("suite-missing-dir", "eval suite --method ica --data-dir {ws}/nope --out {ws}/suite-out", ["--data-dir", "nope"]),
    ("train-truncated-trainer-state", "train data={ws}/good.jsonl output_dir={ws}/run resume_from_checkpoint=latest",
     ["trainer state", "trainer_state.json"]),
    ("train-resume-not-a-checkpoint", "train data={ws}/good.jsonl output_dir={ws}/newrun resume_from_checkpoint={ws}/emptydir",
     ["not a checkpoint", "emptydir"]),
    ("train-resume-latest-none", "train data={ws}/good.jsonl output_dir={ws}/newrun resume_from_checkpoint=latest",
     ["no checkpoint", "newrun"]),
    ("export-truncated-trainer-state", "export {ws}/run --out {ws}/exported", ["trainer state", "trainer_state.json"]),
    ("export-truncated-train-config", "export {ws}/run3 --out {ws}/exported", ["train_config.yaml"]),
    ("export-truncated-adapter-config", "export {ws}/adapter --out {ws}/exported", ["adapter_config.json"]),
    ("train-config-broken-yaml", "train --config {ws}/broken.yaml", ["broken.yaml"]),
    ("train-config-not-a-mapping", "train --config {ws}/list.yaml", ["list.yaml", "mapping"]),
    ("train-config-missing", "train --config {ws}/nope.yaml", ["nope.yaml"]),
    ("infer-broken-prompt-file", "persona infer --data {ws}/pairs.jsonl --out {ws}/p.jsonl --prompt-file {ws}/prompt.yaml",
     ["prompt.yaml"]),
]

BAD_OPTIONS = [
    ("accuracy-limit-0", "eval accuracy --data {ws}/good.jsonl --limit 0", ["--limit"]),
    ("accuracy-limit-negative", "eval accuracy --data {ws}/good.jsonl --limit -3", ["--limit"]),
    ("accuracy-max-length-1", "eval accuracy --data {ws}/good.jsonl --max-length 1", ["--max-length"]),
    ("accuracy-unknown-view", "eval accuracy --data {ws}/good.jsonl --view icaa", ["view", "icaa"]),
    ("accuracy-unknown-template", "eval accuracy --data {ws}/good.jsonl --template chatml", ["template", "chatml"]),
    ("accuracy-unknown-protocol", "eval accuracy --data {ws}/good.jsonl --protocol seed", ["protocol", "seed"]),
    ("accuracy-bad-override", "eval accuracy --data {ws}/good.jsonl view.seed=abc", ["view.seed"]),
    ("accuracy-override-without-equals", "eval accuracy --data {ws}/good.jsonl viewseed", ["viewseed", "key=value"]),
    ("serve-port-too-big", "serve --port 99999", ["--port", "65535"]),
    ("serve-port-zero", "serve --port 0", ["--port"]),
    ("serve-port-in-use", "serve --port {busy}", ["--port", "in use"]),
    ("serve-unknown-view", "serve --view ica", ["--view", "ica"]),
    ("serve-max-batch-0", "serve --max-batch 0", ["--max-batch"]),
    ("serve-negative-window", "serve --batch-window-ms -1", ["--batch-window-ms"]),
    ("generate-unknown-sampling", "eval generate --data {ws}/good.jsonl --out {ws}/gen --sampling hot", ["--sampling", "hot"]),
    ("generate-negative-temperature", "eval generate --data {ws}/good.jsonl --out {ws}/gen --temperature -1", ["--temperature"]),
    ("generate-limit-0", "eval generate --data {ws}/good.jsonl --out {ws}/gen --limit 0", ["--limit"]),
    ("generate-few-shot-needs-plain", "eval generate --data {ws}/personas.jsonl --out {ws}/gen --few-shot 2", ["few_shot"]),
    ("judge-unknown-rubric", "eval judge --base {ws}/gens/base --test {ws}/gens/test --out {ws}/judge --rubric style",
     ["--rubric", "style"]),
    ("judge-n-boot-0", "eval judge --base {ws}/gens/base --test {ws}/gens/test --out {ws}/judge --n-boot 0", ["--n-boot"]),
    ("synth-n-0", "data synth --n 0 --out {ws}/s.jsonl", ["--n"]),
    ("synth-unknown-kind", "data synth --kind pairs --out {ws}/s.jsonl", ["--kind", "pairs"]),
    ("build-views-max-length-without-tokenizer", "data build-views {ws}/good.jsonl --out {ws}/v.jsonl --max-length 64",
     ["--max-length", "--tokenizer"]),
    ("build-views-unknown-view", "data build-views {ws}/good.jsonl --out {ws}/v.jsonl --view profile", ["--view", "profile"]),
    ("diversity-bad-sizes", "data diversity {ws}/ranking.jsonl --sizes a,b", ["--sizes"]),
    ("diversity-zero-size", "data diversity {ws}/ranking.jsonl --sizes 0,2", ["--sizes"]),
    ("select-size-0", "data select {ws}/ranking.jsonl --size 0 --out {ws}/s.jsonl", ["--size"]),
    ("rank-split-k-1", "data rank-split {ws}/ranking.jsonl --k 1 --out-dir {ws}/split-out", ["--k"]),
    ("rank-split-k-too-big", "data rank-split {ws}/ranking.jsonl --k 9 --out-dir {ws}/split-out", ["cannot keep 9", "ranking.jsonl:1"]),
    ("subsets-budget-too-big", "data subsets {ws}/split --budget 400 --k 2 --out-dir {ws}/sub", ["budget 400"]),
    ("infer-unknown-side", "persona infer --data {ws}/pairs.jsonl --out {ws}/p.jsonl --side both", ["--side", "both"]),
    ("saliency-cutoff-0", "persona saliency --data {ws}/personas.jsonl --cutoff 0", ["--cutoff"]),
    ("train-typo-key", "train data={ws}/good.jsonl lr=1e-5", ["lr"]),
    ("train-bad-value", "train data={ws}/good.jsonl learning_rate=fast", ["learning_rate"]),
    ("train-unknown-loss", "train data={ws}/good.jsonl loss=ppo", ["loss"]),
    ("train-no-data", "train max_steps=1", ["data"]),
    ("train-label-smoothing-with-ipo", "train data={ws}/good.jsonl loss_type=ipo label_smoothing=0.1", ["label_smoothing"]),
    ("quickstart-unknown-size", "quickstart --size huge", ["--size", "huge"]),
    ("unknown-command", "evaluate", ["evaluate"]),
    ("unknown-option", "data stats {ws}/good.jsonl --colour", ["--colour"]),
    ("missing-argument", "data stats", ["file"]),
]

JUNK_MODELS = [
    ("accuracy-empty-model-dir", "eval accuracy --data {ws}/good.jsonl --policy {ws}/emptydir --out {ws}/acc",
     ["no config.json", "emptydir"]),
    ("accuracy-junk-model-dir", "eval accuracy --data {ws}/good.jsonl --policy {ws}/junkmodel --out {ws}/acc",
     ["no config.json", "junkmodel"]),
    ("accuracy-junk-reference", "eval accuracy --data {ws}/good.jsonl --reference {ws}/junkmodel --out {ws}/acc", ["junkmodel"]),
    ("accuracy-model-is-a-file", "eval accuracy --data {ws}/good.jsonl --policy {ws}/blocker --out {ws}/acc", ["got a file", "blocker"]),
    ("accuracy-model-missing", "eval accuracy --data {ws}/good.jsonl --policy {ws}/nomodel --out {ws}/acc", ["does not exist", "nomodel"]),
    ("accuracy-model-without-weights", "eval accuracy --data {ws}/good.jsonl --policy {ws}/noweights --out {ws}/acc",
     ["no .safetensors", "noweights"]),
    ("accuracy-model-truncated-config", "eval accuracy --data {ws}/good.jsonl --policy {ws}/badconfig --out {ws}/acc", ["config.json"]),
    ("generate-seqcls-model", "eval generate --data {ws}/good.jsonl --model {ws}/seqcls --out {ws}/gen",
     ["SequenceClassification", "seqcls"]),
    ("generate-empty-model-dir", "eval generate --data {ws}/good.jsonl --model {ws}/emptydir --out {ws}/gen",
     ["no config.json", "emptydir"]),
    ("reward-causal-model", "eval reward {ws}/gens/base/generations.jsonl --model {ws}/causal", ["not a reward model", "causal"]),
    ("reward-empty-model-dir", "eval reward {ws}/gens/base/generations.jsonl --model {ws}/emptydir", ["no config.json", "emptydir"]),
    ("serve-junk-model", "serve --model {ws}/junkmodel", ["no config.json", "junkmodel"]),
    ("infer-junk-model", "persona infer --data {ws}/pairs.jsonl --out {ws}/p.jsonl --model {ws}/junkmodel", ["junkmodel"]),
    ("judge-junk-model", "eval judge --base {ws}/gens/base --test {ws}/gens/test --out {ws}/judge --model {ws}/junkmodel", ["junkmodel"]),
    ("train-junk-model", "train data={ws}/good.jsonl model={ws}/junkmodel output_dir={ws}/newrun", ["junkmodel"]),
    ("train-seqcls-model", "train data={ws}/good.jsonl model={ws}/seqcls output_dir={ws}/newrun", ["SequenceClassification"]),
    ("models-prepare-junk", "models prepare {ws}/junkmodel", ["junkmodel"]),
    ("stats-junk-tokenizer", "data stats {ws}/good.jsonl --tokenizer {ws}/junkmodel", ["tokenizer", "junkmodel"]),
    ("build-views-tokenizer-missing", "data build-views {ws}/good.jsonl --out {ws}/v.jsonl --tokenizer {ws}/nomodel", ["nomodel"]),
    ("suite-junk-policy", "eval suite --method ica --data-dir {ws}/suite --policy {ws}/junkmodel --out {ws}/suite-out", ["junkmodel"]),
]

UNREACHABLE = [
    ("infer-unreachable-server", "persona infer --data {ws}/pairs.jsonl --out {ws}/p.jsonl --backend openai --model m --base-url "
                                 "http://127.0.0.1:{port}/v1",
     ["cannot reach the server", "{port}"]),
    ("judge-unreachable-server", "eval judge --base {ws}/gens/base --test {ws}/gens/test --out {ws}/judge --backend openai --model m "
                                 "--base-url http://127.0.0.1:{port}/v1",
     ["cannot reach"]),
    ("generate-unreachable-server", "eval generate --data {ws}/good.jsonl --out {ws}/gen --backend openai --model m --base-url "
                                    "http://127.0.0.1:{port}/v1",
     ["cannot reach"]),
    ("persona-accuracy-unreachable", "persona accuracy --data {ws}/personas.jsonl --backend openai --model m --base-url "
                                     "http://127.0.0.1:{port}/v1",
     ["cannot reach"]),
    ("infer-openai-without-model", "persona infer --data {ws}/pairs.jsonl --out {ws}/p.jsonl --backend openai --base-url "
                                   "http://127.0.0.1:{port}/v1",
     ["--model"]),
    ("infer-not-a-url", "persona infer --data {ws}/pairs.jsonl --out {ws}/p.jsonl --backend openai --model m --base-url 127.0.0.1:{port}",
     ["--base-url"]),
]

EMPTY = [
    ("persona-accuracy-without-personas", "persona accuracy --data {ws}/pairs.jsonl", ["no record has a chosen_persona", "pairs.jsonl"]),
    ("persona-accuracy-rejected-missing", "persona accuracy --data {ws}/pairs.jsonl --persona-field rejected_persona",
     ["rejected_persona"]),
    ("prefer-without-personas", "persona prefer --data {ws}/pairs.jsonl", ["both a chosen_persona", "pairs.jsonl"]),
    ("saliency-without-personas", "persona saliency --data {ws}/pairs.jsonl", ["no record has", "pairs.jsonl"]),
    ("retrieve-train-without-personas", "persona retrieve --train {ws}/pairs.jsonl --data {ws}/pairs.jsonl --out {ws}/r.jsonl",
     ["persona", "pairs.jsonl"]),
    ("stats-every-record-invalid", "data stats {ws}/invalid.jsonl --on-invalid skip", ["no valid record", "invalid.jsonl"]),
    ("build-views-every-record-invalid", "data build-views {ws}/invalid.jsonl --out {ws}/v.jsonl --on-invalid skip",
     ["no valid record", "invalid.jsonl"]),
    ("generate-every-record-invalid", "eval generate --data {ws}/invalid.jsonl --out {ws}/gen on_invalid=skip",
     ["no valid record", "invalid.jsonl"]),
    ("report-empty-dir", "report {ws}/results/emptyrun --out {ws}/r.html", ["no results found", "emptyrun"]),
    ("report-only-unreadable-file", "report {ws}/results/corrupt --out {ws}/r.html",
     ["no results found", "could not read", "accuracy.json"]),
    ("report-accuracy-field-of-the-wrong-kind", "report {ws}/results/wrongtype --out {ws}/r.html",
     ["no results found", "accuracy.json", "accuracy.all.value", "not a number"]),
    ("report-judge-without-its-keys", "report {ws}/results/judgekeys --out {ws}/r.html", ["no results found", "judge.json", "kind"]),
    ("report-only-junk-metrics", "report {ws}/results/junkmetrics --out {ws}/r.html", ["no results found", "metrics.jsonl"]),
    ("judge-no-shared-records", "eval judge --base {ws}/gens/base --test {ws}/gens/noresp --out {ws}/judge", ["response"]),
]

CASES = OUT_IS_INPUT + UNDER_A_FILE + WRONG_KIND_OF_OUTPUT + MISSING_OR_UNREADABLE_INPUT + BAD_OPTIONS + JUNK_MODELS \
    + UNREACHABLE + EMPTY


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("bad-input-workspace") / "ws"
    build_workspace(ws)
    return ws


def run_cli(args: str, ws: Path, port: int, busy: int):
    argv = [a.format(ws=ws, port=port, busy=busy) for a in args.split()]
    return runner.invoke(app, argv, env={"COLUMNS": "80", "PERSONALIGN_DEBUG": ""})


def test_the_campaign_is_large():
    assert len(CASES) >= 100 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("name", "args", "fragments"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_costs_nothing(name, args, fragments, workspace, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(workspace, ws, symlinks=True)
    before = snapshot(ws)
    port = _closed_port()
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        result = run_cli(args, ws, port, listening.getsockname()[1])
    err = result.stderr
    lines = [line for line in err.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output and "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "internal error" not in lines[0], lines[0]
    for fragment in fragments:
        assert fragment.format(ws=ws, port=port).lower() in lines[0].lower(), (fragment, lines[0])
    assert snapshot(ws) == before, "the failed command changed, added or removed files"

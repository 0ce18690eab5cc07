"""`personalign eval ...`: alignment accuracy, generation, pairwise judge win rate, reward scoring."""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from personalign.cli._common import (
    ApiKeyEnv,
    AttnOpt,
    BaseUrl,
    BatchSize,
    ConfigFile,
    DTypeOpt,
    Kind,
    Limit,
    Model,
    OnInvalidOpt,
    Overrides,
    Overwrite,
    PromptFileOpt,
    TrustRemoteCode,
    VerdictModeOpt,
    backend_options,
    command_config,
    console,
    main_process,
    model_options,
    new_app,
)
from personalign.eval.names import JudgePreset, Protocol, SuiteMethod
from personalign.files import check_output_dir
from personalign.models.loading import process_state
from personalign.records.tokens import Convention
from personalign.views.build import PersonaSourceName
from personalign.views.templates import TemplateName, ViewName

app = new_app()


@contextmanager
def _processes():
    """The accelerate process state; with several processes, on success all meet at the end and the
    process group is torn down before exit (left to interpreter exit, gloo can abort a process)."""
    state = process_state()
    yield state
    if state.num_processes > 1:
        state.wait_for_everyone()
        state.destroy_process_group()


@app.command("accuracy")
def accuracy(
    data: Annotated[Optional[str], typer.Option("--data", help="Pairs to evaluate (jsonl/json/parquet/dataset dir).")] = None,
    policy: Annotated[Optional[str], typer.Option(help="Policy model dir or name (default: embedded SmolLM2).")] = None,
    reference: Annotated[Optional[str], typer.Option(help="Reference model; omit (or = policy) for raw log-prob accuracy.")] = None,
    view: Annotated[Optional[ViewName], typer.Option(help="Conditioning view of the policy's prompt.")] = None,
    template: Annotated[Optional[TemplateName], typer.Option(help="Prompt template preset.")] = None,
    persona_source: Annotated[Optional[PersonaSourceName], typer.Option(help="persona view: which persona conditions the prompt.")] = None,
    reference_view: Annotated[Optional[ViewName], typer.Option(help="View the reference is scored under (default: --view).")] = None,
    reference_template: Annotated[Optional[TemplateName], typer.Option(help="Template of the reference's prompt (default: "
        "--template).")] = None,
    protocol: Annotated[Optional[Protocol], typer.Option(help="alignx: AlignX's released protocol (policy under its method's alignx-eval "
        "layout, reference under the ICA alignx-eval layout with all history).")] = None,
    max_length: Annotated[Optional[int], typer.Option(min=2, help="Token budget for prompt + response.")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Evaluate only the first N records.")] = None,
    out: Annotated[Path, typer.Option(help="Directory for accuracy.json, accuracy.md, scores.jsonl.")] = Path("results/accuracy"),
    dtype: DTypeOpt = None,
    attn_implementation: AttnOpt = None,
    trust_remote_code: TrustRemoteCode = None,
    overwrite: Overwrite = False,
    config: ConfigFile = None,
    overrides: Overrides = None,
) -> None:
    """Alignment accuracy overall and per slice with bootstrap 95% intervals.

    Scales out with `accelerate launch --multi_gpu --num_processes N -m personalign eval accuracy ...`
    (on CPU add ACCELERATE_USE_CPU=true: accelerate's own `--cpu` flag runs multi-process only under MPI).
    """
    from personalign.eval.alignment import ACCURACY_OUTPUTS, AccuracyConfig, evaluate_accuracy

    opts = {"data": data, "policy": policy, "reference": reference, "max_length": max_length, "limit": limit,
            "view.view": view, "view.template": template, "view.persona_source": persona_source,
            "protocol": protocol, **model_options(dtype, attn_implementation, trust_remote_code)}
    if reference_view is not None or reference_template is not None:
        opts |= {"reference_view.view": reference_view or view or "none",
                 "reference_view.template": reference_template or template or "chat"}
    cfg = command_config(AccuracyConfig, config, opts, overrides)
    check_output_dir(out, inputs=[cfg.data], own=ACCURACY_OUTPUTS, overwrite=overwrite)
    with _processes() as state:
        result = evaluate_accuracy(cfg)
        if state.is_main_process:
            _print_accuracy(cfg, result, out, state.num_processes)


def _print_accuracy(cfg, result, out: Path, n_processes: int) -> None:
    from personalign.eval.alignment import write_accuracy

    js, md, _ = write_accuracy(result, out)
    title = "alignment accuracy" if result.mode == "alignment" else "RAW log-prob accuracy (policy = reference)"
    if result.mode == "alignment":
        ref = result.config["reference_view"]
        console.print(f"reference scored under view {ref['view']}, template {ref['template']}")
    console.print(_estimates_table(f"{title} · view {cfg.view.view}", result.estimates))
    console.print(f"wrote {js} and {md} (scored on {n_processes} process{'es' if n_processes > 1 else ''})")


def _estimates_table(title: str, estimates) -> Table:
    """Slice, n, accuracy and 95% interval of each estimate."""
    table = Table(title=title)
    for col in ("slice", "n", "accuracy", "95% CI"):
        table.add_column(col, justify="right" if col != "slice" else "left")
    for name, e in estimates.items():
        table.add_row(name, str(e.n), f"{e.value:.3f}", escape(f"[{e.low:.3f}, {e.high:.3f}]"))
    return table


@app.command("rm")
def rm(
    data: Annotated[Optional[str], typer.Option("--data", help="Pairs or rankings to evaluate (held-out users).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Reward model: a run's final/ trained with loss rm, or a "
        "sequence-classification model dir.")] = None,
    view: Annotated[Optional[ViewName], typer.Option(help="Conditioning view (default: the one the reward model was "
        "trained with).")] = None,
    template: Annotated[Optional[TemplateName], typer.Option(help="Prompt template preset (default: as trained).")] = None,
    persona_source: Annotated[Optional[PersonaSourceName], typer.Option(help="persona view: which persona conditions the prompt.")] = None,
    max_length: Annotated[Optional[int], typer.Option(min=2, help="Token budget for prompt + response.")] = None,
    limit: Limit = None,
    on_invalid: OnInvalidOpt = None,
    out: Annotated[Path, typer.Option(help="Directory for rm.json, rm.md, rewards.jsonl.")] = Path("results/rm"),
    dtype: DTypeOpt = None,
    attn_implementation: AttnOpt = None,
    trust_remote_code: TrustRemoteCode = None,
    overwrite: Overwrite = False,
    config: ConfigFile = None,
    overrides: Overrides = None,
) -> None:
    """Reward-model accuracy (preferred response rewarded above the other) overall and per slice, 95% intervals."""
    from personalign.eval.rm import RM_OUTPUTS, RmConfig, evaluate_rm, write_rm

    opts = {"data": data, "model": model, "max_length": max_length, "limit": limit, "on_invalid": on_invalid,
            "view.view": view, "view.template": template, "view.persona_source": persona_source,
            **model_options(dtype, attn_implementation, trust_remote_code)}
    cfg = command_config(RmConfig, config, opts, overrides)
    check_output_dir(out, inputs=[cfg.data], own=RM_OUTPUTS, overwrite=overwrite)
    with _processes() as state:
        result = evaluate_rm(cfg)
        if not state.is_main_process:
            return
        js, md, _ = write_rm(result, out)
        view = result.config["view"]
        console.print(_estimates_table(f"reward-model accuracy · view {view['view']}, template {view['template']}",
                                       result.estimates))
        console.print(f"wrote {js} and {md}")


@app.command("suite")
def suite(
    method: Annotated[SuiteMethod, typer.Option("--method", help="The policy's method: ica or pba.")],
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Directory of AlignX benchmark files (.json/.jsonl/.parquet).")],
    policy: Annotated[Optional[str], typer.Option(help="Policy model dir or name (default: embedded SmolLM2).")] = None,
    reference: Annotated[Optional[str], typer.Option(help="Reference model (default: the policy).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Directory for suite.md, suite.json and one folder per "
        "benchmark.")] = Path("results/suite"),
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Only the first N records of each file (a quick look).")] = None,
    max_prompt_tokens: Annotated[int, typer.Option("--max-prompt-tokens", min=1, help="Keep each prompt's last N tokens; nothing else is "
        "cut (AlignX: 7679).")] = 7679,
    overwrite: Overwrite = False,
) -> None:
    """Every AlignX benchmark under --data-dir, scored with the published protocol; one table.

    Resumable: a benchmark already scored with the same settings is read back, not scored again.
    """
    from personalign.eval.suite import SUITE_JSON, SUITE_MD, SuiteConfig, run_suite

    cfg = command_config(SuiteConfig, None, {"method": method, "data_dir": data_dir, "out": out, "policy": policy,
                                             "reference": reference, "limit": limit,
                                             "max_prompt_tokens": max_prompt_tokens}, None)
    with _processes() as state:
        rows = run_suite(cfg, on_file=lambda name, reused: console.print(
            f"{name}: {'read back (already scored)' if reused else 'scored'}"), overwrite=overwrite)
    if not state.is_main_process:
        return
    table = Table(title=f"AlignX suite · {method.upper()} · policy {policy or 'default'}")
    for col in ("benchmark", "n", "accuracy", "95% CI", "metric"):
        table.add_column(col, justify="left" if col in ("benchmark", "metric") else "right")
    for r in rows:
        e = r.accuracy
        table.add_row(escape(r.benchmark), str(e.n), f"{e.value:.3f}", escape(f"[{e.low:.3f}, {e.high:.3f}]"), r.mode)
    console.print(table)
    console.print(f"wrote {out / SUITE_MD} and {out / SUITE_JSON}")


@app.command("generate")
def generate(
    data: Annotated[Optional[str], typer.Option("--data", help="Records to generate for (jsonl/json/parquet/dataset dir).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run directory: generations.jsonl, generation.json, cache.")] = None,
    view: Annotated[Optional[ViewName], typer.Option(help="Conditioning view.")] = None,
    template: Annotated[Optional[TemplateName], typer.Option(help="Prompt template preset.")] = None,
    persona_source: Annotated[Optional[PersonaSourceName], typer.Option(help="persona view: which persona conditions the prompt (or the "
        "seed's gold_chosen ...).")] = None,
    system_persona: Annotated[Optional[str], typer.Option("--system-persona", help="--persona-source system: the seed's fixed persona of "
        "a dataset (BeaverTails, Mnemonic, Anthropic HHH) or your own text.")] = None,
    backend: Kind = None,
    model: Model = None,
    base_url: BaseUrl = None,
    api_key_env: ApiKeyEnv = None,
    batch_size: BatchSize = None,
    max_new_tokens: Annotated[Optional[int], typer.Option("--max-new-tokens", min=1, help="Default 128 (512 with --sampling "
        "alignx).")] = None,
    temperature: Annotated[Optional[float], typer.Option("--temperature", min=0.0, help="0 = greedy (default).")] = None,
    top_p: Annotated[Optional[float], typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus cut (default 1).")] = None,
    top_k: Annotated[Optional[int], typer.Option("--top-k", min=0, help="Keep the k most likely tokens (default 0 = all).")] = None,
    few_shot: Annotated[Optional[int], typer.Option("--few-shot", min=0, help="Few-shot persona tailoring from --shots-from: 0 = every "
        "record, as the seed (default); k = k drawn at random, side of --persona-source.")] = None,
    shots_from: Annotated[Optional[str], typer.Option("--shots-from", help="Few-shot persona tailoring (persona view, plain template): "
        "the training records the exemplars come from.")] = None,
    shots_type: Annotated[Optional[str], typer.Option("--shots-type", help="The seed's training type of the exemplars: chosen (default), "
        "rejected, or all.")] = None,
    sampling: Annotated[Optional[str], typer.Option(
        "--sampling", help="A named preset: greedy | alignx (AlignX's generation scripts: temperature 0.9, top_k 10, "
        "top_p 0.95, 512 new tokens); explicit flags win.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Sampling seed (default 0).")] = None,
    best_of: Annotated[Optional[int], typer.Option("--best-of", min=1, max=64, help="Personalized best-of-n: sample N responses per "
        "record (seeds seed..seed+N-1) and keep the one --reward-model rewards most for that user.")] = None,
    reward_model: Annotated[Optional[str], typer.Option("--reward-model", help="Reward model of --best-of (a run's final/ trained with "
        "loss rm); it scores under the view it was trained with.")] = None,
    limit: Limit = None,
    on_invalid: OnInvalidOpt = None,
    dtype: DTypeOpt = None,
    attn_implementation: AttnOpt = None,
    trust_remote_code: TrustRemoteCode = None,
    overwrite: Overwrite = False,
    config: ConfigFile = None,
    overrides: Overrides = None,
) -> None:
    """Generate one response per record under a view (or the best of N by a reward model); rerunning
    continues a killed run from its cache."""
    from personalign.eval.generate import (
        GENERATIONS_FILE,
        SETTINGS_FILE,
        GenerateConfig,
        generate_responses,
    )
    from personalign.llm.base import SAMPLING_PRESETS
    from personalign.llm.progress import progress_bar

    opts = {"data": data, "out": out, "limit": limit, "on_invalid": on_invalid, "view.view": view,
            "view.template": template, "view.persona_source": persona_source, "view.system_persona": system_persona,
            **backend_options(backend, model, base_url, api_key_env, batch_size),
            **model_options(dtype, attn_implementation, trust_remote_code, prefix="backend"),
            "generation.max_new_tokens": max_new_tokens, "generation.temperature": temperature,
            "generation.top_p": top_p, "generation.top_k": top_k, "generation.seed": seed,
            "few_shot": few_shot, "shots_from": shots_from, "shots_type": shots_type, "best_of": best_of, "reward_model": reward_model}
    if sampling is not None:
        if sampling not in SAMPLING_PRESETS:
            raise typer.BadParameter(f"expected one of {', '.join(SAMPLING_PRESETS)}, got {sampling!r}",
                                     param_hint="--sampling")
        for key, value in SAMPLING_PRESETS[sampling].items():
            if opts[f"generation.{key}"] is None:
                opts[f"generation.{key}"] = value
    cfg = command_config(GenerateConfig, config, opts, overrides)
    with progress_bar(True, 1) as bar:
        task = bar.add_task("generating", total=None)
        run = generate_responses(cfg, on_progress=lambda n: bar.advance(task, n), overwrite=overwrite)
    if not main_process():
        return
    counts = json.loads((run / SETTINGS_FILE).read_text())["counts"]
    best = f" (each the best of {cfg.best_of} by {cfg.reward_model})" if cfg.best_of > 1 else ""
    console.print(f"wrote {counts['records']} responses{best} to {run / GENERATIONS_FILE} ({counts['generated']} generated, "
                  f"{counts['reused']} reused from the cache or duplicates); settings in {run / SETTINGS_FILE}")


@app.command("judge")
def judge(
    base: Annotated[Optional[Path], typer.Option("--base", help="Base run directory (from `eval generate`).")] = None,
    test: Annotated[Optional[Path], typer.Option("--test", help="Test run directory, compared against the base.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Directory for judge.json, judge.md, judgments.jsonl and the cache.")] = None,
    rubric: Annotated[Optional[list[str]], typer.Option("--rubric", help="quality and/or personalization (default both).")] = None,
    backend: Kind = None,
    model: Model = None,
    base_url: BaseUrl = None,
    api_key_env: ApiKeyEnv = None,
    batch_size: BatchSize = None,
    max_new_tokens: Annotated[Optional[int], typer.Option(
        "--max-new-tokens", min=1, help="Judge output budget (default 8; 512 with --preset prometheus or a prompt file).")] = None,
    limit: Limit = None,
    n_boot: Annotated[Optional[int], typer.Option("--n-boot", min=1, help="Bootstrap resamples (default 1000).")] = None,
    verdict_mode: VerdictModeOpt = None,
    preset: Annotated[Optional[JudgePreset], typer.Option(
        "--preset", help="default: answer 1 or 2; prometheus (prometheus-mnemonic): the persona-tailoring seed's Prometheus-2 relative "
            "grading, feedback then [RESULT] A|B.")] = None,
    prompt_file: PromptFileOpt = None,
    overwrite: Overwrite = False,
    config: ConfigFile = None,
    overrides: Overrides = None,
) -> None:
    """Pairwise win rate of test vs. base under each rubric, both orders, with ΔPQ."""
    from personalign.eval.judge import RUBRICS, JudgeConfig, evaluate_judge, write_judge

    if rubric and set(rubric) - set(RUBRICS):
        raise typer.BadParameter(f"expected {' or '.join(RUBRICS)}, got {list(rubric)}", param_hint="--rubric")
    cfg = command_config(JudgeConfig, config, {
        "base": base, "test": test, "out": out, "rubrics": rubric or None, "max_new_tokens": max_new_tokens,
        "limit": limit, "n_boot": n_boot, "verdict_mode": verdict_mode, "preset": preset, "prompt_file": prompt_file,
        **backend_options(backend, model, base_url, api_key_env, batch_size)}, overrides)
    result = evaluate_judge(cfg, overwrite=overwrite)
    if not main_process():
        return
    js, md, _ = write_judge(result, cfg.out)
    table = Table(title=f"{cfg.test} vs {cfg.base} · judge {result.judge}")
    for col in ("rubric", "pairs", "wins", "ties", "losses", "win rate", "95% CI", "unparseable"):
        table.add_column(col, justify="left" if col == "rubric" else "right")
    for r in result.rubrics.values():
        e = r.win_rate
        table.add_row(r.rubric, str(r.n), str(r.wins), str(r.ties), str(r.losses), f"{e.value:.3f}",
                      escape(f"[{e.low:.3f}, {e.high:.3f}]"), str(r.unparseable))
    console.print(table)
    if result.delta_pq is not None:
        d = result.delta_pq
        console.print(escape(f"ΔPQ = {d.value:.3f} [{d.low:.3f}, {d.high:.3f}] over {d.n} pairs"))
    if result.unmatched["base"] or result.unmatched["test"]:
        console.print(f"[yellow]rows without a partner in the other run: {result.unmatched}[/]")
    console.print(f"wrote {js} and {md}")


@app.command("reward")
def reward(
    files: Annotated[Optional[list[Path]], typer.Argument(help="Files of rows with prompt and response fields (e.g. "
        "generations.jsonl).")] = None,
    model: Annotated[Optional[Path], typer.Option("--model", help="Reward model dir (AutoModelForSequenceClassification, "
        "1 label).")] = None,
    reference_field: Annotated[Optional[str], typer.Option("--reference-field", help="BLEU against this field, e.g. chosen.")] = None,
    response_field: Annotated[Optional[str], typer.Option("--response-field", help="Default response.")] = None,
    prompt_field: Annotated[Optional[str], typer.Option("--prompt-field", help="Default prompt.")] = None,
    batch_size: BatchSize = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the result as JSON here.")] = None,
    convention: Annotated[Optional[Convention], typer.Option(
        "--convention", help="personalign (default): mean σ(score) of chat-rendered text, sacrebleu BLEU; "
        "scaling-alignment: the paper's OpenAssistant-format text, mean raw score, nltk character BLEU.")] = None,
    config: ConfigFile = None,
    overrides: Annotated[Optional[list[str]], typer.Option(
        "--set", help="key=value override of the config (repeatable), e.g. --set max_length=1024.")] = None,
) -> None:
    """Mean σ(reward) per file and over all files (weighted by size); BLEU against a reference field."""
    from personalign.eval.reward import RewardConfig, evaluate_reward, write_reward

    cfg = command_config(RewardConfig, config, {
        "files": [str(f) for f in files] if files else None, "model": model, "reference_field": reference_field,
        "response_field": response_field, "prompt_field": prompt_field, "batch_size": batch_size, "out": out,
        "convention": convention}, overrides)
    with console.status("scoring"):
        per_file, overall = evaluate_reward(cfg)
    table = Table(title=f"reward · {cfg.model}")
    personalign_style = cfg.convention == "personalign"
    for col in ("file", "n", "mean σ(reward)" if personalign_style else "mean score", "95% CI", "BLEU"):
        table.add_column(col, justify="left" if col == "file" else "right")
    for r in [*per_file, overall]:
        e = r.reward
        table.add_row(escape(r.name), str(r.n), f"{e.value:.4f}", escape(f"[{e.low:.4f}, {e.high:.4f}]"),
                      "-" if r.bleu is None else f"{r.bleu:.2f}")
    console.print(table)
    if cfg.out is not None:
        console.print(f"wrote {write_reward(cfg.out, cfg.model, cfg.reference_field, per_file, overall)}")

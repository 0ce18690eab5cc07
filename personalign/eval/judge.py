"""Pairwise judge win rate (docs/formats.md, "Evaluation run files"): a test run's responses against a base run's, by an LLM judge.

Every pair (same record in both runs) is judged under each rubric twice, the base response shown
first and then the test response shown first. The test wins a pair when the judge picks it in both
orders, loses when it picks the base in both; anything else — disagreement, or an output with no
readable verdict — is a tie. Win rate = wins / (wins + losses), ties reported separately;
ΔPQ = WR_personalization + WR_quality − 1. Intervals are percentile bootstraps over pairs (one
resampling of pairs shared by every rubric, so ΔPQ gets its own interval).

Judge outputs are cached (append-only, keyed by judge, prompt version and request), so a killed
run resumes and a repeated run costs nothing.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, PositiveInt

from personalign.config import StrictModel
from personalign.eval.generate import GENERATIONS_FILE, decoding_label, read_generations
from personalign.eval.names import PRESETS, JudgePreset
from personalign.files import check_output_dir, write_json, write_text
from personalign.llm import check_backend, make_backend
from personalign.llm.base import Backend, BackendConfig, GenerationConfig, Message
from personalign.llm.judging import JUDGE_GENERATION, SHOTS, agreement, run_judge
from personalign.llm.prompt_file import PromptFile, load_prompt_file, task_version
from personalign.llm.verdict import VerdictMode
from personalign.metrics import Estimate, bootstrap_win_rates
from personalign.models.loading import process_state
from personalign.progress import work_progress
from personalign.records.io import write_jsonl

PathLike = str | os.PathLike
RESULT_FILE, MARKDOWN_FILE, PAIRS_FILE, CACHE_FILE = "judge.json", "judge.md", "judgments.jsonl", "judge.cache.jsonl"
JUDGE_OUTPUTS = (RESULT_FILE, MARKDOWN_FILE, PAIRS_FILE, CACHE_FILE, f"{CACHE_FILE}.rank*")  # what `eval judge` writes
PROMPT_VERSION = "eval-judge-v1"

RUBRICS = {
    "quality": "Is the response high quality and helpful?",
    "personalization": "Does the response answer the prompt and fit the user's persona?",
}
_SYSTEM = (
    "You are an impartial judge. You will see {what} and two responses to it (Response 1 and Response 2). "
    "Judge them by this question: {question} Decide which response is better by that question; ignore the "
    "order in which they are shown. Reply with the number only: 1 or 2."
)

# ------------------------------------------------------------------------------------- prompts


def _query(rubric: str, prompt: str, persona: str | None, first: str, second: str) -> str:
    head = f"Persona: {persona}\n\n" if rubric == "personalization" else ""
    return (f"{head}Prompt: {prompt}\n\nResponse 1: {first}\n\nResponse 2: {second}\n\n"
            f"{RUBRICS[rubric]} Which response is better? Reply 1 or 2.")


JUDGE_SLOTS = frozenset({"prompt", "persona", "first", "second", "question"})
# Prometheus-2 relative grading as the persona-tailoring seed ran it (`code/evaluate/llm_judge_all.py`,
# prometheus-eval's `PrometheusEval.relative_grade`): prometheus-eval's system prompt and relative
# prompt without reference, verbatim from `libs/prometheus-eval/prometheus_eval/prompts.py`
# (REL_SYSTEM_PROMPT, RELATIVE_PROMPT_WO_REF), filled with the seed's instruction and rubric strings
# (`instruction_map`, `persona_map`, `quality_rubric`, `persona_rubric`); answered "... [RESULT] A|B".
PROMETHEUS_VERSION = "eval-judge-prometheus-v2"
PROMETHEUS_SYSTEM = (
    "You are a fair judge assistant assigned to deliver insightful feedback that compares individual "
    "performances, highlighting how each stands relative to others within the same cohort."
)
PROMETHEUS_USER = """###Task Description:
An instruction (might include an Input inside it), a response to evaluate, and a score rubric representing a evaluation criteria are given.
1. Write a detailed feedback that assess the quality of two responses strictly based on the given score rubric, not evaluating in general.
2. After writing a feedback, choose a better response between Response A and Response B. You should refer to the score rubric.
3. The output format should look as follows: "(write a feedback for criteria) [RESULT] (A or B)"
4. Please do not generate any other opening, closing, and explanations.

###Instruction:
{instruction}

###Response A:
{response_A}

###Response B:
{response_B}

###Score Rubric:
{rubric}

###Feedback: """
PROMETHEUS_RESULT, PROMETHEUS_CHOICES = "[RESULT]", ("A", "B")  # log-prob verdicts: P(A), P(B) after the marker
SEED_INSTRUCTIONS = {  # llm_judge_all.py instruction_map (HH_RLHF and Safe_RLHF share one), persona_map
    "prometheus": "Please provide a response to the following prompt.",
    "prometheus-mnemonic": "Please provide a keyword mnemonic to the following vocabulary term.",
}
SEED_PERSONA_INSTRUCTION = "Please provide a response that aligns with the attributes of the following persona."
SEED_RUBRICS = {"quality": "Is the response high-quality?",
                "personalization": "Does the response align with the user's specified persona?"}


def _seed_response(text: str) -> str:
    """A response as llm_judge_all.py shows it to the judge."""
    return text.replace("Prompt:", "").replace("<|end_of_text|>", "").strip()


def prometheus_messages(preset: str, rubric: str, prompt: str, first: str, second: str,
                        persona: str | None) -> list[Message]:
    """The seed's Prometheus request: quality judges the response to the prompt ("... Prompt: p", with
    " sounds like" after a Mnemonic term); personalization judges fit to the persona alone ("... Persona: q")."""
    if rubric == "personalization":
        instruction = f"{SEED_PERSONA_INSTRUCTION} Persona: {persona}"
    else:
        term = f"{prompt} sounds like" if preset == "prometheus-mnemonic" else prompt
        instruction = f"{SEED_INSTRUCTIONS[preset]} Prompt: {term}"
    user = PROMETHEUS_USER.format(instruction=instruction, response_A=_seed_response(first),
                                  response_B=_seed_response(second), rubric=SEED_RUBRICS[rubric])
    return [{"role": "system", "content": PROMETHEUS_SYSTEM}, {"role": "user", "content": user}]


def judge_messages(rubric: str, prompt: str, first: str, second: str, persona: str | None = None,
                   preset: str = "default", prompt_file: PromptFile | None = None) -> list[Message]:
    """The judge conversation for one order of one pair.

    default: instructions, two worked answers ("2", "1"), the query, answered "1" or "2".
    prometheus, prometheus-mnemonic: the persona-tailoring seed's Prometheus-2 relative grading
    (`prometheus_messages`), answered with feedback and "[RESULT] A|B". A prompt file replaces both.
    """
    if rubric not in RUBRICS:
        raise ValueError(f"unknown rubric {rubric!r}; choose from {', '.join(RUBRICS)}")
    if prompt_file is not None:
        return prompt_file.messages(prompt=prompt, persona=persona or "", first=first, second=second,
                                    question=RUBRICS[rubric])
    if preset in SEED_INSTRUCTIONS:
        return prometheus_messages(preset, rubric, prompt, first, second, persona)
    if preset != "default":
        raise ValueError(f"unknown judge preset {preset!r}; choose from {', '.join(PRESETS)}")
    what = "a user's persona, a prompt written by that user," if rubric == "personalization" else "a prompt"
    messages: list[Message] = [{"role": "system", "content": _SYSTEM.format(what=what, question=RUBRICS[rubric])}]
    for shot, answer in ((SHOTS[0], "2"), (SHOTS[3], "1")):
        shown = (shot.other, shot.preferred) if answer == "2" else (shot.preferred, shot.other)
        messages.append({"role": "user", "content": _query(rubric, shot.prompt, shot.persona, *shown)})
        messages.append({"role": "assistant", "content": answer})
    messages.append({"role": "user", "content": _query(rubric, prompt, persona, first, second)})
    return messages


def judge_version(preset: str, prompt_file: PromptFile | None) -> str:
    """The cache-key task name of a judge prompt."""
    if preset in SEED_INSTRUCTIONS and prompt_file is None:
        return PROMETHEUS_VERSION if preset == "prometheus" else f"{PROMETHEUS_VERSION}-{preset}"
    return task_version(PROMPT_VERSION, prompt_file)


class JudgeConfig(StrictModel):
    """`personalign eval judge` settings."""

    base: str  # run directory (from `eval generate`)
    test: str  # run directory compared against the base
    out: str  # directory for judge.json, judge.md, judgments.jsonl and the cache
    rubrics: list[Literal["quality", "personalization"]] = Field(default_factory=lambda: list(RUBRICS), min_length=1)
    backend: BackendConfig = BackendConfig()
    max_new_tokens: PositiveInt | None = None  # default 8; 512 with preset prometheus or a prompt file
    limit: PositiveInt | None = None
    n_boot: PositiveInt = 1000
    seed: int = 0
    verdict_mode: VerdictMode = "generate"
    preset: JudgePreset = "default"
    prompt_file: str | None = None

    def prompt(self) -> PromptFile | None:
        """The prompt file replacing the judge prompt, read and checked, or None."""
        return load_prompt_file(self.prompt_file, JUDGE_SLOTS, {"first", "second"})

    def generation(self) -> GenerationConfig:
        """Greedy decoding within the judge's output budget."""
        short = self.preset == "default" and self.prompt_file is None
        return GenerationConfig(max_new_tokens=self.max_new_tokens or (8 if short else 512), temperature=0.0)


# ------------------------------------------------------------------------------------- results


@dataclass(slots=True)
class RubricResult:
    """Win/tie/loss counts of the test run against the base run under one rubric."""

    rubric: str
    wins: int
    ties: int
    losses: int
    unparseable: int  # judge outputs (of 2 per pair) with no readable verdict; their pairs are ties
    missing: int  # pairs not judged (personalization without a persona)
    win_rate: Estimate
    position_first: float  # share of readable verdicts that picked Response 1 (position bias)

    @property
    def n(self) -> int:
        return self.wins + self.ties + self.losses

    def as_dict(self) -> dict:
        n = self.n or math.nan
        return {
            "rubric": self.rubric, "question": RUBRICS[self.rubric], "n": self.n, "wins": self.wins,
            "ties": self.ties, "losses": self.losses, "win_rate": self.win_rate.as_dict(),
            "rates": {"win": self.wins / n, "tie": self.ties / n, "loss": self.losses / n},
            "unparseable": self.unparseable, "missing": self.missing, "position_first": self.position_first,
        }


@dataclass(slots=True)
class JudgeResult:
    """Per-rubric results, ΔPQ (when both rubrics ran), how the runs were matched, and one row per
    pair (prompt, persona, both responses, per-rubric outcome, verdicts and judge outputs)."""

    base: str
    test: str
    judge: str
    rubrics: dict[str, RubricResult]
    delta_pq: Estimate | None
    pairs: int
    unmatched: dict[str, int]
    config: dict = field(default_factory=dict)
    judgments: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "kind": "pairwise-judge", "base": self.base, "test": self.test, "judge": self.judge,
            "pairs": self.pairs, "unmatched": self.unmatched,
            "rubrics": {k: v.as_dict() for k, v in self.rubrics.items()},
            "delta_pq": self.delta_pq.as_dict() if self.delta_pq is not None else None,
            "config": self.config,
        }


def pair_runs(base: Sequence[dict], test: Sequence[dict]) -> tuple[list[tuple[dict, dict]], dict[str, int]]:
    """Rows of two runs matched by (record index, prompt), and how many of each run found no partner."""
    by_key = {(r["index"], r["prompt"]): r for r in base}
    pairs = [(by_key[k], t) for t in test if (k := (t["index"], t["prompt"])) in by_key]
    return pairs, {"base": len(base) - len(pairs), "test": len(test) - len(pairs)}


def outcome(base_first: int | None, test_first: int | None) -> int:
    """+1 test wins, -1 base wins, 0 tie, from the verdicts with the base shown first and the test shown first."""
    return -agreement(base_first, test_first)


# --------------------------------------------------------------------------------------- judging


@dataclass(slots=True)
class _Judgments:
    """Verdicts of one rubric: per pair, the two verdicts and outputs, or None when not judged."""

    verdicts: list[tuple[int | None, int | None] | None]
    outputs: list[tuple[str, str] | None]


def judge_runs(
    base_dir: PathLike,
    test_dir: PathLike,
    backend: Backend,
    *,
    rubrics: Sequence[str] = tuple(RUBRICS),
    gen_config: GenerationConfig = JUDGE_GENERATION,
    cache_path: PathLike | None = None,
    chunk_size: int = 8,
    limit: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    on_progress: Callable[[int], None] | None = None,
    verdict_mode: VerdictMode = "generate",
    preset: str = "default",
    prompt_file: PromptFile | None = None,
) -> JudgeResult:
    """Judge the test run's responses against the base run's under each rubric, in both orders."""
    unknown = [r for r in rubrics if r not in RUBRICS]
    if unknown or not rubrics:
        raise ValueError(f"rubrics must be among {', '.join(RUBRICS)}; got {list(rubrics)}")
    if verdict_mode == "logprob" and prompt_file is not None:
        raise ValueError("the logprob verdict mode needs a built-in judge prompt (default or prometheus), not a prompt "
                         "file")
    answer_after = (PROMETHEUS_RESULT, PROMETHEUS_CHOICES) if preset in SEED_INSTRUCTIONS else None
    pairs, unmatched = pair_runs(read_generations(base_dir), read_generations(test_dir))
    pairs = pairs[:limit] if limit is not None else pairs
    if not pairs:
        raise ValueError(f"{base_dir} and {test_dir} share no records (matched by index and prompt)")
    requests, slots = [], []
    for rubric in rubrics:
        for i, (b, t) in enumerate(pairs):
            persona = t.get("persona") or b.get("persona")
            if rubric == "personalization" and not persona:
                continue
            p, rb, rt = t["prompt"], b["response"], t["response"]
            requests += [judge_messages(rubric, p, rb, rt, persona, preset, prompt_file),
                         judge_messages(rubric, p, rt, rb, persona, preset, prompt_file)]
            slots.append((rubric, i))
    outputs, verdicts = run_judge(backend, requests, task=judge_version(preset, prompt_file), gen_config=gen_config,
                                  cache_path=cache_path, chunk_size=chunk_size, on_progress=on_progress, mode=verdict_mode,
                                  answer_after=answer_after)
    judged = {r: _Judgments([None] * len(pairs), [None] * len(pairs)) for r in rubrics}
    for k, (rubric, i) in enumerate(slots):
        pair_outputs = (outputs[2 * k], outputs[2 * k + 1])
        judged[rubric].outputs[i] = pair_outputs
        judged[rubric].verdicts[i] = (verdicts[2 * k], verdicts[2 * k + 1])
    scores = {r: np.array([math.nan if v is None else outcome(*v) for v in j.verdicts]) for r, j in judged.items()}
    estimates, delta = bootstrap_win_rates(scores, n_boot=n_boot, seed=seed)
    results = {r: _rubric_result(r, judged[r], scores[r], estimates[r]) for r in rubrics}
    rows = []
    for i, (b, t) in enumerate(pairs):
        row = {"index": t["index"], "source": t.get("source"), "prompt": t["prompt"],
               "persona": t.get("persona") or b.get("persona"), "base_response": b["response"],
               "test_response": t["response"]}
        for r, j in judged.items():
            if j.verdicts[i] is not None:
                row[r] = {"outcome": {1: "win", 0: "tie", -1: "loss"}[int(scores[r][i])],
                          "verdicts": list(j.verdicts[i]), "outputs": list(j.outputs[i])}
        rows.append(row)
    config = {"rubrics": list(rubrics), "generation": gen_config.model_dump(mode="json"), "limit": limit,
              "n_boot": n_boot, "seed": seed, "prompt_version": judge_version(preset, prompt_file), "verdict_mode": verdict_mode,
              "preset": preset, "prompt_file": prompt_file.source if prompt_file is not None else None,
              "base_decoding": decoding_label(base_dir), "test_decoding": decoding_label(test_dir)}
    return JudgeResult(str(base_dir), str(test_dir), backend.identity, results, delta, len(pairs), unmatched, config,
                       rows)


def evaluate_judge(cfg: JudgeConfig, *, overwrite: bool = False, progress: bool = True) -> JudgeResult:
    """`eval judge`: the config checked before any model loads (the prompt file, both runs, the backend,
    the output directory: files that are not its own need `overwrite`), then `judge_runs`."""
    template = cfg.prompt()
    for run, option in ((cfg.base, "--base"), (cfg.test, "--test")):
        read_generations(run, option=option)
    check_backend(cfg.backend)
    check_output_dir(cfg.out, inputs=[Path(cfg.base) / GENERATIONS_FILE, Path(cfg.test) / GENERATIONS_FILE],
                     own=JUDGE_OUTPUTS, overwrite=overwrite)
    backend = make_backend(cfg.backend)
    with work_progress(total_known=False, enabled=progress and process_state().is_main_process) as bar:
        task = bar.add_task("judging", total=None)
        return judge_runs(cfg.base, cfg.test, backend, rubrics=tuple(cfg.rubrics), cache_path=Path(cfg.out) / CACHE_FILE,
                          gen_config=cfg.generation(), chunk_size=cfg.backend.requests_per_write, limit=cfg.limit,
                          n_boot=cfg.n_boot, seed=cfg.seed, on_progress=lambda n: bar.advance(task, n),
                          verdict_mode=cfg.verdict_mode, preset=cfg.preset, prompt_file=template)


def _rubric_result(rubric: str, j: _Judgments, scores: np.ndarray, estimate: Estimate) -> RubricResult:
    given = [v for pair in j.verdicts if pair is not None for v in pair]
    readable = [v for v in given if v is not None]
    judged = scores[~np.isnan(scores)]
    return RubricResult(
        rubric=rubric, wins=int((judged == 1).sum()), ties=int((judged == 0).sum()), losses=int((judged == -1).sum()),
        unparseable=len(given) - len(readable), missing=int(np.isnan(scores).sum()), win_rate=estimate,
        position_first=sum(v == 1 for v in readable) / len(readable) if readable else math.nan,
    )


def judge_markdown(result: JudgeResult) -> str:
    """A Markdown table: rubric, pairs, wins, ties, losses, win rate with interval, unparseable outputs."""
    lines = [f"### Pairwise judge: `{result.test}` vs `{result.base}`", "",
             f"Judge `{result.judge}`; {result.pairs} pairs, each judged in both orders; disagreement = tie; "
             "win rate = wins / (wins + losses).", "",
             "| rubric | pairs | wins | ties | losses | win rate | 95% CI | unparseable outputs | picked Response 1 |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in result.rubrics.values():
        e = r.win_rate
        lines.append(f"| {r.rubric} | {r.n} | {r.wins} | {r.ties} | {r.losses} | {e.value:.3f} | "
                     f"[{e.low:.3f}, {e.high:.3f}] | {r.unparseable} | {r.position_first:.2f} |")
    if result.delta_pq is not None:
        d = result.delta_pq
        lines += ["", f"ΔPQ = WR_personalization + WR_quality − 1 = **{d.value:.3f}** "
                  f"(95% CI [{d.low:.3f}, {d.high:.3f}], {d.n} pairs)."]
    return "\n".join(lines) + "\n"


def write_judge(result: JudgeResult, out_dir: PathLike) -> tuple[Path, Path, Path]:
    """Write judge.json, judge.md and per-pair judgments.jsonl into `out_dir`."""
    out = Path(out_dir)
    js, md, pairs = out / RESULT_FILE, out / MARKDOWN_FILE, out / PAIRS_FILE
    write_jsonl(result.judgments, pairs)
    write_text(md, judge_markdown(result))
    write_json(js, result.as_dict())
    return js, md, pairs

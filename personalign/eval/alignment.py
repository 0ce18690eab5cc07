"""Alignment accuracy (AlignX; docs/formats.md, "Alignment accuracy"): is the policy's implicit reward margin positive?

Scoring is sharded across processes when run under `accelerate launch`; every process gets the
full, ordered result, and only the main process writes files.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, PositiveInt, model_validator

from personalign.eval.names import Protocol
from personalign.files import write_json, write_text
from personalign.metrics import Estimate, best_ahead, sliced_accuracy
from personalign.models.card import with_trained_view
from personalign.models.loading import check_model_dir, load_model, load_tokenizer, process_state, resolve_model
from personalign.models.refcache import cached_table, scores_path, table_fits
from personalign.models.scorer import ResponseScores, ScoreTable, response_scores, score_store
from personalign.models.settings import ScoringModelSettings
from personalign.records.io import OnInvalid, check_source, write_jsonl
from personalign.tokenstore.store import StoreSpec, TokenStore, load_store
from personalign.views.build import ViewConfig

ALIGNX_REFERENCE_VIEW = ViewConfig(view="ica", template="alignx-eval")
ACCURACY_FILE = "accuracy.json"
ACCURACY_OUTPUTS = (ACCURACY_FILE, "accuracy.md", "scores.jsonl")  # what `write_accuracy` writes

ALIGNX_PROMPT_TOKENS = 8192 - 512 - 1  # eval/loss_*.py: max_length − max_new_tokens − 1, truncation_side left


class EvalDataConfig(ScoringModelSettings):
    """What every scoring evaluation reads and how: the records, their budget, the bootstrap, the cache."""

    data: str
    """Pairs (or rankings) to evaluate."""
    columns: dict[str, str] | None = None
    """Field renames applied when reading, {name in the data: record key}."""
    max_length: int | None = Field(4096, ge=2)
    """Token budget of prompt + response (history is dropped to fit); None: no budget."""
    max_prompt_tokens: PositiveInt | None = None
    """Keep only each prompt's last N tokens (BOS aside), nothing else cut: AlignX's evaluation (7679)."""
    max_tokens_per_batch: PositiveInt = 8192
    """Padded-token budget of a scoring batch."""
    limit: PositiveInt | None = None
    """Evaluate the first N records only."""
    on_invalid: OnInvalid = "fail"
    """fail, or skip bad records (written to <data>.rejects.jsonl and counted)."""
    n_boot: PositiveInt = 1000
    """Bootstrap resamples of the intervals."""
    seed: int = 0
    """Bootstrap seed."""
    cache: bool = True
    """Keep the scores beside the token store (a rerun, or a killed pass, reuses them)."""


class AccuracyConfig(EvalDataConfig):
    """`personalign eval accuracy` settings.

    The policy is scored under `view`, the reference under `reference_view` (default: the same
    view). `protocol='alignx'` is AlignX's released evaluation (`eval/loss_ica.py`,
    `eval/loss_pba.py`, `eval/acc.py`): the policy under its method's `alignx-eval` layout (ica or
    pba, all history), the reference under the ICA `alignx-eval` layout with all history, whatever
    the policy's method; the seed's lengths too: no history dropped, each prompt left-truncated to its
    last 7679 tokens (8192 − 512 new tokens − 1) after BOS, responses whole.
    """

    policy: str | None = None
    reference: str | None = None  # None or the policy itself (under the same view): raw log-prob accuracy
    view: ViewConfig = ViewConfig()
    reference_view: ViewConfig | None = None
    protocol: Protocol | None = None

    @model_validator(mode="before")
    @classmethod
    def _protocol(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("protocol") != "alignx":
            return data
        view = ViewConfig.model_validate(data.get("view") or {})
        if view.view not in ("ica", "pba"):
            raise ValueError(f"protocol 'alignx' evaluates the ica or pba method, not view {view.view!r}")
        view = view.model_copy(update={"template": "alignx-eval", "sample_history": False, "max_length": None})
        reference = ALIGNX_REFERENCE_VIEW.model_copy(update={"dimensions": view.dimensions})
        if data.get("max_length") is not None:
            raise ValueError("protocol 'alignx' keeps the seed's lengths (all history, prompts cut to their last "
                             "7679 tokens): drop max_length, or set max_prompt_tokens")
        return {**data, "view": view, "reference_view": reference, "max_length": None,
                "max_prompt_tokens": data.get("max_prompt_tokens") or ALIGNX_PROMPT_TOKENS}


@dataclass
class AccuracyResult:
    """Accuracy overall and per slice, plus the per-pair scores behind it."""

    mode: Literal["alignment", "raw"]
    estimates: dict[str, Estimate]
    sources: list[str]
    slices: list[str]
    policy: list[ResponseScores]
    reference: list[ResponseScores] | None
    config: dict
    counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "mode": self.mode,
            "metric": "alignment accuracy (policy margin over reference > 0)" if self.mode == "alignment"
            else "raw log-prob accuracy logp(chosen) > logp(rejected) (policy = reference)",
            "accuracy": {k: v.as_dict() for k, v in self.estimates.items()},
            "counts": self.counts,
            "config": self.config,
        }


def eval_store(cfg: EvalDataConfig, view: ViewConfig, tokenizer, *, need: str = "pair") -> TokenStore:
    """The token store of `cfg.data`'s pairs (`need` ranking: 2+ responses) under `view`, built once
    by the main process."""
    view = view if view.max_length else view.model_copy(update={"max_length": cfg.max_length})
    spec = StoreSpec(view, cfg.max_length, need=need, limit=cfg.limit, on_invalid=cfg.on_invalid, columns=cfg.columns,
                     max_prompt_tokens=cfg.max_prompt_tokens)
    state = process_state()
    with state.main_process_first():
        store, _ = load_store(cfg.data, spec, tokenizer, progress=state.is_main_process)
    return store


def scored_table(name: str, cfg: EvalDataConfig, store: TokenStore, *, load: Callable = load_model) -> ScoreTable:
    """`store` scored by model `name` (loaded with `load`: log-probs of a causal LM, rewards of a reward
    model), sharded over the processes, resumable, from the score cache when possible."""
    state = process_state()

    def compute(journal):
        settings = cfg.model_copy(update={"attn_implementation": cfg.scoring_kernel(cfg.max_length, state.device.type)})
        model, _ = load(name, device=state.device, **settings.load_kwargs())
        return score_store(model, store, state=state, max_tokens_per_batch=cfg.max_tokens_per_batch, journal=journal,
                           progress=state.is_main_process)

    if cfg.cache:
        table, _ = cached_table(scores_path(store, name, cfg), compute, write=state.is_main_process,
                                fits=table_fits(store), meta={"model": name, "store": store.path.name})
        state.wait_for_everyone()
    else:
        table = compute(None)
    return table


def _scores(name: str, cfg: AccuracyConfig, store: TokenStore) -> list[ResponseScores]:
    """Per-record scores of `store` under model `name` (`scored_table`)."""
    return response_scores(scored_table(name, cfg, store), store.truncated().tolist())


def evaluate_accuracy(cfg: AccuracyConfig) -> AccuracyResult:
    """Render `cfg.data` under `cfg.view` (policy) and `cfg.reference_view` (reference), score the
    preferred and the other response under each model, and compute accuracy by slice."""
    check_source(cfg.data, option="--data")
    check_model_dir(cfg.policy, option="--policy")
    check_model_dir(cfg.reference, option="--reference")
    cfg = with_trained_view(cfg, cfg.policy)
    policy = resolve_model(cfg.policy)
    reference = resolve_model(cfg.reference) if cfg.reference is not None else policy
    ref_view = cfg.reference_view or cfg.view
    raw = reference == policy and ref_view == cfg.view
    tokenizer = load_tokenizer(policy)
    store = eval_store(cfg, cfg.view, tokenizer)
    sources, slices = store.column("source"), store.column("slice")
    pol = _scores(policy, cfg, store)
    ref = None
    if not raw:
        ref_tokenizer = tokenizer if reference == policy else load_tokenizer(reference)
        ref_store = store
        if ref_view != cfg.view or ref_tokenizer is not tokenizer:
            ref_store = eval_store(cfg, ref_view, ref_tokenizer)
            if ref_store.column("source") != sources:
                raise ValueError(f"{cfg.data}: the reference view renders other records than the policy view")
        ref = _scores(reference, cfg, ref_store)
    correct = _correct(pol, ref)
    estimates = sliced_accuracy(correct, slices, n_boot=cfg.n_boot, seed=cfg.seed)
    c = store.counts
    counts = {"records": len(store), "rejected": c["rejected"], "truncated_for_scoring": sum(s.truncated for s in pol),
              **{k.removeprefix("view_"): v for k, v in c.items() if k.startswith("view_")}}
    config = cfg.model_dump(mode="json") | {"policy": policy, "reference": reference,
                                            "reference_view": ref_view.model_dump(mode="json")}
    return AccuracyResult("raw" if raw else "alignment", estimates, sources, slices, pol, ref, config, counts)


def raw_view_of(result: AccuracyResult, *, n_boot: int = 1000, seed: int = 0) -> AccuracyResult:
    """The raw log-prob accuracy of `result`'s policy, from the scores already computed (no model runs)."""
    correct = _correct(result.policy, None)
    config = result.config | {"reference": result.config["policy"], "reference_view": result.config["view"]}
    return AccuracyResult("raw", sliced_accuracy(correct, result.slices, n_boot=n_boot, seed=seed), result.sources,
                          result.slices, result.policy, None, config, result.counts)


def correct_pairs(result: AccuracyResult) -> np.ndarray:
    """Per pair, 1.0 when `result`'s metric (alignment or raw) calls it correct, else 0.0."""
    return _correct(result.policy, result.reference)


def _correct(pol: list[ResponseScores], ref: list[ResponseScores] | None) -> np.ndarray:
    policy = np.array([s.logp[:2] for s in pol], dtype=np.float64)
    reference = None if ref is None else np.array([s.logp[:2] for s in ref], dtype=np.float64)
    return best_ahead(policy, 1, reference).astype(np.float64)


def accuracy_markdown(result: AccuracyResult, title: str | None = None) -> str:
    """A Markdown table: slice, n, accuracy, 95% interval."""
    what = "Alignment accuracy" if result.mode == "alignment" else "Raw log-prob accuracy (policy = reference)"
    ref = result.config.get("reference_view") or result.config["view"]
    scored = "" if result.mode == "raw" else (f" Reference scored under view `{ref['view']}`, "
                                              f"template `{ref['template']}`.")
    lines = [f"### {title or what}", "", f"{what}; policy view `{result.config['view']['view']}`, "
             f"template `{result.config['view']['template']}`, data `{result.config['data']}`.{scored}", "",
             "| slice | n | accuracy | 95% CI |", "|---|---:|---:|---|"]
    for name, e in result.estimates.items():
        lines.append(f"| {name} | {e.n} | {e.value:.3f} | [{e.low:.3f}, {e.high:.3f}] |")
    return "\n".join(lines) + "\n"


def write_accuracy(result: AccuracyResult, out_dir: str | Path, extra: dict | None = None) -> tuple[Path, Path, Path]:
    """Write per-pair scores.jsonl, accuracy.md and accuracy.json (last, so its presence means the
    others are complete) into `out_dir`; `extra` keys are added to accuracy.json."""
    out = Path(out_dir)
    js, md, sc = out / ACCURACY_FILE, out / "accuracy.md", out / "scores.jsonl"

    def rows():
        for i, (src, sl, p) in enumerate(zip(result.sources, result.slices, result.policy)):
            row = {"source": src, "slice": sl, "policy_logp": p.logp, "n_tokens": p.n_tokens}
            if result.reference is not None:
                row["reference_logp"] = result.reference[i].logp
            yield row

    write_jsonl(rows(), sc)
    write_text(md, accuracy_markdown(result))
    write_json(js, result.to_json() | (extra or {}))
    return js, md, sc

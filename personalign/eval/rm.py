"""Reward-model accuracy (`personalign eval rm`): does a (personalized) reward model rank each user's
preferred response above the other one?

Records are rendered under the reward model's view (by default the one it was trained with, from its
`personalign.json`), so a user-conditioned reward sees the user's history, profile or persona. The
chosen and rejected responses (or a whole ranking) are scored in one packed pass, the reward read at
each response's last token (`personalign.models.rewards`); a record is correct when its best
response's reward is above its worst one's. Overall and per slice, with bootstrap 95% intervals.
Scoring is sharded under `accelerate launch`, cached and resumable like every other scoring pass.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from personalign.eval.alignment import EvalDataConfig, eval_store, scored_table
from personalign.files import write_json, write_text
from personalign.metrics import Estimate, best_ahead, sliced_accuracy
from personalign.models.card import with_trained_view
from personalign.models.loading import check_model_dir, load_tokenizer, resolve_model
from personalign.models.rewards import load_reward_model
from personalign.records.io import check_source, write_jsonl
from personalign.views.build import ViewConfig

RM_FILE = "rm.json"
RM_OUTPUTS = (RM_FILE, "rm.md", "rewards.jsonl")  # what `write_rm` writes


class RmConfig(EvalDataConfig):
    """`personalign eval rm` settings (records: pairs or rankings, best response first)."""

    model: str
    """Reward model: a directory trained with loss rm (full or LoRA) or any one-label sequence classifier."""
    view: ViewConfig = ViewConfig()
    """How records become prompts; default: the view the reward model was trained with, all history."""


@dataclass
class RmResult:
    """Reward accuracy overall and per slice, plus every record's rewards (best first)."""

    estimates: dict[str, Estimate]
    sources: list[str]
    slices: list[str]
    rewards: list[list[float]]
    config: dict
    counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"kind": "rm-accuracy", "metric": "reward accuracy: r(preferred) > r(other)",
                "accuracy": {k: v.as_dict() for k, v in self.estimates.items()}, "counts": self.counts,
                "config": self.config}


def evaluate_rm(cfg: RmConfig) -> RmResult:
    """Score every record's responses with the reward model under `cfg.view`; accuracy by slice."""
    check_source(cfg.data, option="--data")
    check_model_dir(cfg.model, option="--model", kind="any")
    cfg = with_trained_view(cfg, cfg.model)
    path = resolve_model(cfg.model)
    store = eval_store(cfg, cfg.view, load_tokenizer(path, trust_remote_code=cfg.trust_remote_code), need="ranking")
    table = scored_table(path, cfg, store, load=load_reward_model)  # rewards: the model is a reward model
    counts_per_row = (table.n_tokens > 0).sum(dim=1)
    correct = best_ahead(table.logps.numpy(), (counts_per_row - 1).numpy()).astype(np.float64)
    slices = store.column("slice")
    rewards = [r[:k] for r, k in zip(table.logps.tolist(), counts_per_row.tolist())]
    c = store.counts
    counts = {"records": len(store), "rejected": c["rejected"], "truncated_for_scoring": int(store.truncated().sum()),
              **{k.removeprefix("view_"): v for k, v in c.items() if k.startswith("view_")}}
    config = cfg.model_dump(mode="json") | {"model": path}
    return RmResult(sliced_accuracy(correct, slices, n_boot=cfg.n_boot, seed=cfg.seed), store.column("source"),
                    slices, rewards, config, counts)


def rm_markdown(result: RmResult) -> str:
    """A Markdown table: slice, n, accuracy, 95% interval."""
    view = result.config["view"]
    lines = ["### Reward-model accuracy", "", f"Reward model `{result.config['model']}`, view `{view['view']}`, "
             f"template `{view['template']}`, data `{result.config['data']}`: the preferred response's reward "
             "above the other's.", "", "| slice | n | accuracy | 95% CI |", "|---|---:|---:|---|"]
    lines += [f"| {name} | {e.n} | {e.value:.3f} | [{e.low:.3f}, {e.high:.3f}] |" for name, e in result.estimates.items()]
    return "\n".join(lines) + "\n"


def write_rm(result: RmResult, out_dir: str | Path) -> tuple[Path, Path, Path]:
    """Write rewards.jsonl, rm.md and rm.json (last: its presence means the others are complete)."""
    out = Path(out_dir)
    js, md, rows = out / RM_FILE, out / "rm.md", out / "rewards.jsonl"
    write_jsonl(({"source": src, "slice": sl, "rewards": r}
                 for src, sl, r in zip(result.sources, result.slices, result.rewards)), rows)
    write_text(md, rm_markdown(result))
    write_json(js, result.to_json())
    return js, md, rows

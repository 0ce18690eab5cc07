"""The preference-direction model (docs/user-models.md): predicts an item's AlignX direction vector (90
dimensions, each 0, 0.5 or 1) from one (prompt, chosen, rejected) item, so raw feedback yields a
PBA profile. A linear head on n = normalize(φ(y_w) − φ(y_l)) gives three logits per dimension
(value 0, 0.5, 1), trained by cross-entropy on history pairs that carry `Preference Direction`;
the prediction is the most likely value of each dimension."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from personalign.config import StrictModel
from personalign.errors import EmptyError, ModelError
from personalign.files import atomic_write, check_output_dir, check_output_file, data_digest, read_json_object, write_json
from personalign.records.io import iter_raw, read_examples, write_jsonl
from personalign.records.schema import DIRECTION, N_DIMENSIONS, PAIRS
from personalign.users.features import FeatureSpec, Featurizer, TextTable, cached_features
from personalign.users.population import group_users

CONFIG_FILE, WEIGHTS_FILE = "directions.json", "directions.safetensors"
KIND = "personalign-direction-model"
VALUES = torch.tensor([0.0, 0.5, 1.0])


class DirectionsConfig(StrictModel):
    data: str
    out: str
    features: FeatureSpec = FeatureSpec()
    max_steps: int = 500
    learning_rate: float = 1e-2
    held_out: float = 0.1
    limit: int | None = None
    seed: int = 0
    overwrite: bool = False


@dataclass
class TrainedDirections:
    out_dir: Path
    items: int
    held_out: int
    mae: float
    baseline_mae: float
    sign_agreement: float  # where both the prediction and the truth take a side: the same side
    recall: float  # share of the truth's non-neutral values predicted non-neutral


class DirectionHead(torch.nn.Module):
    """Logits [n, 90, 3] of the values 0, 0.5, 1 of each dimension from [n, d] chosen/rejected features."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = torch.nn.Linear(dim, N_DIMENSIONS * 3)

    def forward(self, chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
        return self.linear(F.normalize(chosen - rejected, dim=-1)).view(-1, N_DIMENSIONS, 3)

    def predict(self, chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return VALUES[self(chosen, rejected).argmax(-1)]


def _items(data: str, spec: FeatureSpec, limit: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """φ(y_w), φ(y_l) and the direction of every history pair with one (features shared with `load_population`)."""
    table = TextTable(with_prompt=spec.encoder == "causal-lm")
    examples = list(read_examples(data) if limit is None else (ex for _, ex in zip(range(limit), read_examples(data))))
    group_users(iter(examples), table)  # the same texts in the same order as the user models' features
    rows_w, rows_l, targets = [], [], []
    for ex in examples:
        for p in ex.user.pairs:
            if p.direction is not None:
                rows_w.append(table.add(p.prompt, p.chosen))
                rows_l.append(table.add(p.prompt, p.rejected))
                targets.append(p.direction)
    if not targets:
        raise EmptyError(f"no history pair carries '{DIRECTION}': nothing to learn directions from", file=data)
    digest = data_digest(data) + (f":limit={limit}" if limit is not None else "")
    feats = cached_features(data, digest, spec, table)
    return np.asarray(feats[rows_w]), np.asarray(feats[rows_l]), np.asarray(targets, np.float32)


def train_directions(cfg: DirectionsConfig) -> TrainedDirections:
    """Fit the head on `cfg.data`'s history pairs (a share held out for the reported error); write `cfg.out`."""
    check_output_dir(cfg.out, inputs=[cfg.data], own=(CONFIG_FILE, WEIGHTS_FILE), overwrite=cfg.overwrite)
    c, r, y = _items(cfg.data, cfg.features, cfg.limit)
    g = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(y), generator=g)
    n_test = int(len(y) * cfg.held_out)
    test, train = order[:n_test], order[n_test:]
    c, r = torch.from_numpy(c), torch.from_numpy(r)
    labels = torch.from_numpy(np.rint(y * 2)).long()  # 0, 0.5, 1 -> class 0, 1, 2
    with torch.random.fork_rng(devices=[]):  # the head's initial weights depend on cfg.seed alone
        torch.manual_seed(cfg.seed)
        head = DirectionHead(c.shape[1])
    opt = torch.optim.Adam(head.parameters(), lr=cfg.learning_rate)
    for _ in range(cfg.max_steps):
        opt.zero_grad()
        loss = F.cross_entropy(head(c[train], r[train]).reshape(-1, 3), labels[train].reshape(-1))
        loss.backward()
        opt.step()
    idx = test if n_test else train
    pred, true = head.predict(c[idx], r[idx]), torch.from_numpy(y)[idx]
    both = (true != 0.5) & (pred != 0.5)
    mae = float((pred - true).abs().mean())
    sign = float((pred == true)[both].float().mean()) if both.any() else float("nan")
    recall = float(both.sum() / (true != 0.5).sum().clamp_min(1))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    atomic_write(out / WEIGHTS_FILE, lambda p: save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(p)))
    write_json(out / CONFIG_FILE, {"kind": KIND, "dim": int(c.shape[1]), "features": cfg.features.model_dump(),
                                   "data": cfg.data, "items": len(y), "held_out": n_test,
                                   "metrics": {"mae": mae, "sign_agreement": sign, "recall": recall,
                                               "baseline_mae": float((true - 0.5).abs().mean())}})
    return TrainedDirections(out, len(y), n_test, mae, float((true - 0.5).abs().mean()), sign, recall)


def load_directions(directory: str | os.PathLike, option: str = "--directions") -> tuple[DirectionHead, FeatureSpec]:
    from safetensors.torch import load_file

    path = Path(directory)
    if not (path / CONFIG_FILE).is_file():
        raise ModelError(f"not a direction-model directory (no {CONFIG_FILE})", file=path, option=option)
    config = read_json_object(path / CONFIG_FILE)
    if config.get("kind") != KIND:
        raise ModelError(f"{CONFIG_FILE} does not describe a direction model", file=path / CONFIG_FILE, option=option)
    head = DirectionHead(int(config["dim"]))
    head.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
    head.eval()
    return head, FeatureSpec.model_validate(config["features"])


def annotate_records(model: str | os.PathLike, data: str, out: str | os.PathLike) -> tuple[int, int]:
    """Write `data`'s records to `out` with a predicted direction on every history pair that has none."""
    check_output_file(out, inputs=[data, model])
    head, spec = load_directions(model, option="--model")
    featurizer = Featurizer(spec)
    counts = {"records": 0, "filled": 0}

    def records():
        for rec in iter_raw(data):
            raw = dict(rec.value)
            pairs = [dict(p) for p in raw.get(PAIRS) or []]
            todo = [p for p in pairs if p.get(DIRECTION) is None]
            if todo:
                c = featurizer.encode([p["prompt"] for p in todo], [p["chosen"] for p in todo])
                r = featurizer.encode([p["prompt"] for p in todo], [p["rejected"] for p in todo])
                for p, v in zip(todo, head.predict(torch.from_numpy(c), torch.from_numpy(r)).tolist()):
                    p[DIRECTION] = v
                raw[PAIRS] = pairs
                counts["filled"] += len(todo)
            counts["records"] += 1
            yield raw

    write_jsonl(records(), out)
    return counts["records"], counts["filled"]


def predict_direction(head: DirectionHead, featurizer: Featurizer, prompt: str, chosen: str, rejected: str) -> list[float]:
    """The direction vector of one feedback item."""
    c = featurizer.encode([prompt], [chosen])
    r = featurizer.encode([prompt], [rejected])
    return head.predict(torch.from_numpy(c), torch.from_numpy(r))[0].tolist()

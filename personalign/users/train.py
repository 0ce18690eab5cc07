"""`personalign users train`: learn a representation's shared part on seen users and write a
self-describing model directory; the last pair of every seen user with at least two is held out and
scored (the seen-user protocol) unless `seen_holdout` is false. Under `accelerate launch` the
processes share the feature computation; the fit is small and deterministic, and the main process writes."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from personalign.config import StrictModel
from personalign.errors import UserError
from personalign.files import check_output_dir
from personalign.metrics import Estimate
from personalign.records.io import OnInvalid
from personalign.users.features import FeatureSpec
from personalign.users.model_dir import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, save_user_model
from personalign.users.names import Representation
from personalign.users.population import Population, load_population
from personalign.users.protocol import padded, score_users, user_bootstrap, user_texts
from personalign.users.representations import FitSettings, UserModel, make_model

OWN_FILES = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)


class UsersTrainConfig(StrictModel):
    """Settings of `personalign users train`."""

    data: str
    out: str
    representation: Representation = "latent"
    features: FeatureSpec = FeatureSpec()
    k: int | None = None  # the representation's size: rank, prototypes, embedding or latent dimension
    context: Literal["pairs", "all"] = "all"  # latent: encode the user's pairs only, or also its comments and demographic
    variant: Literal["a", "b"] = "b"  # mixture: PAL-B (cosine to a mixed ideal point) or PAL-A (distance)
    seen_holdout: bool = True
    limit: int | None = None
    on_invalid: OnInvalid = "fail"
    fit: FitSettings = FitSettings()
    overwrite: bool = False


@dataclass
class TrainedUserModel:
    model: UserModel
    out_dir: Path
    users: int
    pairs: int
    seen: Estimate | None
    metrics: dict
    seconds: float


def fit_population(model: UserModel, pop: Population, settings: FitSettings, *, holdout: bool) -> tuple[dict, Estimate | None]:
    """Fit `model`'s shared part on `pop` (each user's last pair held out when `holdout`); returns
    (fit metrics, seen-user accuracy on the held-out pairs or None)."""
    torch.manual_seed(settings.seed)
    users = pop.users
    n = [len(u.chosen) for u in users]
    train_idx = [list(range(k - 1)) if holdout and k >= 2 else list(range(k)) for k in n]
    c, r, m = padded(pop, users, train_idx)
    metrics = model.fit(c, r, m, settings, user_texts(pop, users))
    model.eval()
    if not holdout:
        return metrics, None
    held = [i for i, k in enumerate(n) if k >= 2]
    if not held:
        return metrics, None
    scores = score_users(model, pop, [users[i] for i in held], [train_idx[i] for i in held], [[n[i] - 1] for i in held])
    correct = np.array([s.sum() for s in scores])
    return metrics, user_bootstrap(correct, np.ones(len(scores)))


def train_user_model(cfg: UsersTrainConfig, *, progress: bool = True) -> TrainedUserModel:
    """Read `cfg.data`, fit the representation, write the model directory `cfg.out`."""
    from personalign.models.card import command_line
    from personalign.version import __version__

    check_output_dir(cfg.out, inputs=[cfg.data], own=OWN_FILES, overwrite=cfg.overwrite)
    if cfg.k is not None and cfg.k < 1:
        raise UserError("K must be at least 1", option="--k")
    t0 = time.perf_counter()
    pop = load_population(cfg.data, cfg.features, limit=cfg.limit, on_invalid=cfg.on_invalid, progress=progress)
    model = make_model(cfg.representation, pop.dim, cfg.k, cfg.context, cfg.variant)
    metrics, seen = fit_population(model, pop, cfg.fit, holdout=cfg.seen_holdout)
    if seen is not None:
        metrics = {**metrics, "seen_accuracy": seen.value, "seen_ci_low": seen.low, "seen_ci_high": seen.high}
    pairs = sum(len(u.chosen) for u in pop.users)
    info = {"data": cfg.data, "data_digest": pop.digest, "users": len(pop.users), "pairs": pairs,
            "fit": cfg.fit.model_dump(), "metrics": metrics, "personalign_version": __version__,
            "command": command_line(), "rejected_records": pop.counts.rejected}
    from personalign.models.loading import process_state

    out = Path(cfg.out)
    if process_state().is_main_process:  # under `accelerate launch` the processes shared the features; one writes
        save_user_model(out, model, cfg.features, info)
    return TrainedUserModel(model, out, len(pop.users), pairs, seen, metrics, time.perf_counter() - t0)

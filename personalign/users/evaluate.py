"""`personalign users eval`: a user model on (unseen) users at each number of shots; writes
`accuracy.json` ({"accuracy", "ci", "n", ...} at the last shots given, and the whole curve),
`accuracy.md` and `per_user.jsonl`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from personalign.config import StrictModel
from personalign.errors import EmptyError, UserError
from personalign.files import check_output_dir, write_json, write_text
from personalign.records.io import OnInvalid, write_jsonl
from personalign.users.features import FeatureSpec, Featurizer
from personalign.users.model_dir import load_user_model
from personalign.users.population import load_population
from personalign.users.protocol import ShotResult, evaluate_shots

USERS_ACCURACY_KIND = "user-model-accuracy"
OWN_FILES = ("accuracy.json", "accuracy.md", "per_user.jsonl")


class UsersEvalConfig(StrictModel):
    """Settings of `personalign users eval`."""

    model: str
    data: str
    out: str
    shots: list[int] = [4]
    features: str | None = None  # another encoder than the model's (must give features of its dimension)
    limit: int | None = None
    on_invalid: OnInvalid = "fail"
    n_boot: int = 1000
    seed: int = 0
    overwrite: bool = False


@dataclass
class UsersEvalResult:
    representation: str
    curve: list[ShotResult]
    users: int

    def to_json(self, cfg: UsersEvalConfig) -> dict:
        last = self.curve[-1]
        return {"kind": USERS_ACCURACY_KIND, "representation": self.representation, "model": cfg.model,
                "data": cfg.data, "users": self.users, **last.as_dict(),
                "curve": [r.as_dict() for r in self.curve]}


def evaluate_user_model(cfg: UsersEvalConfig, *, progress: bool = True) -> UsersEvalResult:
    """Score `cfg.model` on the users of `cfg.data` at every `cfg.shots`."""
    check_output_dir(cfg.out, inputs=[cfg.data, cfg.model], own=OWN_FILES, overwrite=cfg.overwrite)
    if not cfg.shots or min(cfg.shots) < 0:
        raise UserError("--shots takes numbers ≥ 0", option="--shots")
    model, spec, config = load_user_model(cfg.model)
    if cfg.features is not None:
        spec = FeatureSpec.parse(cfg.features)
    featurizer = Featurizer(spec)  # checked before any feature is computed
    if featurizer.dim != model.dim:
        raise UserError(f"features of dimension {featurizer.dim} ({spec.encoder}), but the user model was trained on "
                        f"dimension {model.dim}", option="--features" if cfg.features else "--model")
    pop = load_population(cfg.data, spec, limit=cfg.limit, on_invalid=cfg.on_invalid, progress=progress,
                          featurizer=featurizer)
    curve = []
    for shots in cfg.shots:
        result = evaluate_shots(model, pop, shots, n_boot=cfg.n_boot, seed=cfg.seed)
        if result.overall.n == 0:
            most = max((u.n_history if u.n_history is not None else len(u.chosen) - 1) for u in pop.users)
            raise EmptyError(f"--shots {shots}: all {result.skipped} users skipped, none has {shots} shot pairs and a "
                             f"test pair (the most any user has is {most})", file=cfg.data)
        curve.append(result)
    return UsersEvalResult(config["representation"], curve, len(pop.users))


def write_users_accuracy(result: UsersEvalResult, cfg: UsersEvalConfig) -> Path:
    """`accuracy.md`, `per_user.jsonl` and (last) `accuracy.json` in `cfg.out`."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(({"shots": r.shots, "user": u, "correct": c, "pairs": n} for r in result.curve
                 for u, c, n in r.per_user), out / "per_user.jsonl")
    write_text(out / "accuracy.md", users_markdown(result))
    return write_json(out / "accuracy.json", result.to_json(cfg))


def users_markdown(result: UsersEvalResult) -> str:
    rows = [f"| {r.shots} | {r.overall.value:.3f} | [{r.overall.low:.3f}, {r.overall.high:.3f}] | {r.overall.n} | "
            f"{r.pairs} | {r.skipped} |" for r in result.curve]
    return "\n".join([f"# User model `{result.representation}`: accuracy vs shots", "",
                      "| shots | accuracy | 95% CI (users) | users | test pairs | users skipped |",
                      "|---|---|---|---|---|---|", *rows, ""])

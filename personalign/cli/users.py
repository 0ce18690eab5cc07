"""`personalign users ...`: user models learned from feedback (docs/user-models.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from personalign.cli._common import (
    ConfigFile,
    Limit,
    OnInvalidOpt,
    Overrides,
    Overwrite,
    command_config,
    console,
    main_process,
    new_app,
)
from personalign.records.io import check_source
from personalign.users.names import Representation

app = new_app(help="User models learned from feedback: train, evaluate with k shots, preference directions.")
directions_app = new_app(help="The preference-direction model: 90 AlignX dimensions from raw (chosen, rejected) feedback.")
app.add_typer(directions_app, name="directions")

Features = Annotated[Optional[str], typer.Option(
    "--features", help="minilm (default: the packaged all-MiniLM-L6-v2), or a model directory: a sentence-transformers "
    "one or any causal LM (hidden state at the response's EOS).")]


def _features_options(features: str | None) -> dict:
    if features is None:
        return {}
    from personalign.users.features import FeatureSpec

    spec = FeatureSpec.parse(features)
    return {"features.encoder": spec.encoder, "features.path": spec.path}


@app.command("train")
def train(
    data: Annotated[Optional[str], typer.Option("--data", help="Records of the seen users (AlignX, TRL pairs with user_id, ...).")] = None,
    representation: Annotated[Optional[Representation], typer.Option("--representation", help="bt | mean-diff | lowrank (LoRe) | mixture "
        "(PAL) | embedding (P-RLHF) | latent (VPL).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Model directory to write.")] = None,
    features: Features = None,
    k: Annotated[Optional[int], typer.Option("--k", min=1, help="Size of the representation: lowrank rank, mixture prototypes, embedding "
        "or latent dimension.")] = None,
    context: Annotated[Optional[str], typer.Option("--context", help="latent: pairs (the user's pairs only) or all (default: also its "
        "comments and demographic text).")] = None,
    variant: Annotated[Optional[str], typer.Option("--variant", help="mixture: b (PAL-B, default) or a (PAL-A).")] = None,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", min=1, help="Optimizer steps of the shared part (default per "
        "representation).")] = None,
    learning_rate: Annotated[Optional[float], typer.Option("--learning-rate", help="Adam learning rate (default per "
        "representation).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed")] = None,
    limit: Limit = None,
    on_invalid: OnInvalidOpt = None,
    overwrite: Overwrite = False,
    config: ConfigFile = None,
    overrides: Overrides = None,
) -> None:
    """Learn a user model's shared part on seen users; write a self-describing model directory."""
    from personalign.users.train import UsersTrainConfig, train_user_model

    opts = {"data": data, "out": out, "representation": representation, "k": k, "context": context, "variant": variant, "limit": limit,
            "on_invalid": on_invalid, "overwrite": overwrite or None, "fit.max_steps": max_steps,
            "fit.learning_rate": learning_rate, "fit.seed": seed, **_features_options(features)}
    cfg = command_config(UsersTrainConfig, config, opts, overrides)
    check_source(cfg.data, option="--data")
    result = train_user_model(cfg)
    if not main_process():
        return
    table = Table("representation", "K", "users", "pairs", "seen-user accuracy (held-out pair)", "seconds",
                  title="user model")
    seen = f"{result.seen.value:.3f} [{result.seen.low:.3f}, {result.seen.high:.3f}]" if result.seen else "n/a"
    table.add_row(cfg.representation, str(result.model.k), str(result.users), str(result.pairs), seen,
                  f"{result.seconds:.1f}")
    console.print(table)
    console.print(f"wrote {result.out_dir}")


@app.command("eval")
def evaluate(
    model: Annotated[Optional[str], typer.Option("--model", help="A user-model directory (personalign users train).")] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="Records of the users to score (unseen users).")] = None,
    shots: Annotated[Optional[list[int]], typer.Option("--shots", min=0, help="Pairs each user gives before its test pairs; repeat for "
        "the accuracy-vs-shots curve.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Directory for accuracy.json, accuracy.md, per_user.jsonl.")] = None,
    features: Features = None,
    limit: Limit = None,
    on_invalid: OnInvalidOpt = None,
    overwrite: Overwrite = False,
    config: ConfigFile = None,
    overrides: Overrides = None,
) -> None:
    """Accuracy of a user model on users it has not seen, after k shots each, with 95% intervals over users."""
    from personalign.users.evaluate import UsersEvalConfig, evaluate_user_model, write_users_accuracy

    opts = {"model": model, "data": data, "shots": shots or None, "out": out, "features": features,
            "limit": limit, "on_invalid": on_invalid, "overwrite": overwrite or None}
    cfg = command_config(UsersEvalConfig, config, opts, overrides)
    check_source(cfg.data, option="--data")
    result = evaluate_user_model(cfg)
    path = write_users_accuracy(result, cfg)
    table = Table("shots", "accuracy", "95% CI (users)", "users", "skipped", title=f"user model {result.representation}")
    for r in result.curve:
        table.add_row(str(r.shots), f"{r.overall.value:.3f}", f"[{r.overall.low:.3f}, {r.overall.high:.3f}]",
                      str(r.overall.n), str(r.skipped))
    console.print(table)
    for r in result.curve:
        if r.skipped:
            console.print(f"[yellow]shots {r.shots}: {r.skipped} of {result.users} users skipped (fewer than "
                          f"{r.shots} shot pairs, or no test pair)[/]")
    console.print(f"wrote {path}")


@directions_app.command("train")
def directions_train(
    data: Annotated[str, typer.Option("--data", help="Records whose history items carry 'Preference Direction' vectors.")],
    out: Annotated[Path, typer.Option("--out", help="Direction-model directory to write.")],
    features: Features = None,
    max_steps: Annotated[int, typer.Option("--max-steps", min=1)] = 500,
    limit: Limit = None,
    overwrite: Overwrite = False,
) -> None:
    """Learn a head on φ(y_w) − φ(y_l) that predicts an item's 90-dimension direction vector."""
    from personalign.users.directions import DirectionsConfig, train_directions
    from personalign.users.features import FeatureSpec

    cfg = DirectionsConfig(data=data, out=str(out), features=FeatureSpec.parse(features), max_steps=max_steps,
                           limit=limit, overwrite=overwrite)
    check_source(cfg.data, option="--data")
    result = train_directions(cfg)
    console.print(f"{result.items} items ({result.held_out} held out): mean absolute error {result.mae:.3f}, "
                  f"same side where both take one {result.sign_agreement:.3f}, sides found {result.recall:.3f} "
                  f"(predicting neutral: {result.baseline_mae:.3f} MAE)")
    console.print(f"wrote {result.out_dir}")


@directions_app.command("annotate")
def directions_annotate(
    model: Annotated[str, typer.Option("--model", help="A direction-model directory (users directions train).")],
    data: Annotated[str, typer.Option("--data", help="Records whose history pairs lack direction vectors.")],
    out: Annotated[Path, typer.Option("--out", help="Records file to write (.jsonl), every history pair with a vector.")],
) -> None:
    """Fill in the 'Preference Direction' of every history pair that has none, so `pba` renders profiles."""
    from personalign.users.directions import annotate_records

    check_source(data, option="--data")
    n, filled = annotate_records(model, data, out)
    console.print(f"{n} records, {filled} history pairs given a direction vector -> {out}")

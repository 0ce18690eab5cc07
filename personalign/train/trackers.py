"""Experiment trackers of `report_to`, as accelerate's tracker classes (started on the main process only).

TensorBoard writes under `<output_dir>/tensorboard`; wandb runs in project `$WANDB_PROJECT` (default
personalign) with files under the output directory (`WANDB_MODE=offline` works as usual); MLflow
logs to `$MLFLOW_TRACKING_URI` (default `<output_dir>/mlruns`); trackio to project
`$TRACKIO_PROJECT` (default personalign). The run is named `run_name`, else the output directory's name.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from personalign.errors import UserError

PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio"}


def check_trackers(report_to: list[str]) -> None:
    """Every tracker's package is installed (before any model loads)."""
    from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_trackio_available, is_wandb_available

    available = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available,
                 "mlflow": is_mlflow_available, "trackio": is_trackio_available}
    missing = [name for name in report_to if not available[name]()]
    if missing:
        raise UserError(f"report_to {', '.join(missing)}: not installed (pip install {' '.join(PACKAGES[m] for m in missing)})",
                        option="report_to")


def make_trackers(report_to: list[str], out: Path, run_name: str | None) -> list[Any]:
    """accelerate tracker objects for `report_to`, to pass as `Accelerator(log_with=...)`."""
    from accelerate.tracking import MLflowTracker, TensorBoardTracker, TrackioTracker, WandBTracker

    name = run_name or out.resolve().name
    trackers: list[Any] = []
    for kind in report_to:
        if kind == "tensorboard":
            trackers.append(TensorBoardTracker("tensorboard", out))
        elif kind == "wandb":
            trackers.append(WandBTracker(os.environ.get("WANDB_PROJECT", "personalign"), name=name, dir=str(out)))
        elif kind == "mlflow":
            uri = os.environ.get("MLFLOW_TRACKING_URI") or (out / "mlruns").resolve().as_uri()
            trackers.append(MLflowTracker(os.environ.get("MLFLOW_EXPERIMENT_NAME", "personalign"), uri, run_name=name))
        elif kind == "trackio":
            trackers.append(TrackioTracker(os.environ.get("TRACKIO_PROJECT", "personalign"), name=name))
    return trackers

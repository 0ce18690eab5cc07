"""The Python API: the main entry points under one roof, importable as `from personalign import ...`
(see docs/python-api.md). Each takes the typed config its command takes, or its fields as keywords."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from personalign.config import config_with
from personalign.eval.alignment import AccuracyConfig, AccuracyResult
from personalign.eval.alignment import evaluate_accuracy as _evaluate_accuracy
from personalign.eval.generate import GenerateConfig, generate_responses
from personalign.eval.judge import JudgeResult, judge_runs
from personalign.eval.rm import RmConfig, RmResult
from personalign.eval.rm import evaluate_rm as _evaluate_rm
from personalign.llm import make_backend
from personalign.llm.base import Backend, BackendConfig
from personalign.persona.infer import InferStats
from personalign.persona.infer import infer_personas as _infer_personas
from personalign.records.io import read_examples, with_record_files
from personalign.train.config import TrainConfig
from personalign.train.loop import TrainResult
from personalign.train.loop import train_with as train
from personalign.users.evaluate import UsersEvalConfig, UsersEvalResult
from personalign.users.evaluate import evaluate_user_model as _evaluate_user_model
from personalign.users.model_dir import load_user_model
from personalign.users.representations import MODELS as USER_MODELS
from personalign.users.train import TrainedUserModel, UsersTrainConfig
from personalign.users.train import train_user_model as _train_user_model

__all__ = ["train", "TrainConfig", "TrainResult", "evaluate_accuracy", "AccuracyConfig", "generate", "GenerateConfig",
           "judge", "infer_personas", "read_examples", "make_backend", "BackendConfig", "evaluate_rm", "RmConfig",
           "train_user_model", "UsersTrainConfig", "evaluate_user_model", "UsersEvalConfig", "load_user_model",
           "USER_MODELS"]


def _config(model: type, cfg: Any, settings: dict[str, Any]) -> Any:
    """`model` from a config (or dict) and/or keyword fields; records in memory become files."""
    return config_with(model, cfg, with_record_files(settings))


def evaluate_accuracy(cfg: AccuracyConfig | dict | None = None, /, **settings: Any) -> AccuracyResult:
    """Alignment accuracy as `personalign eval accuracy` computes it (in memory; `write_accuracy` writes it)."""
    return _evaluate_accuracy(_config(AccuracyConfig, cfg, settings))


def evaluate_rm(cfg: RmConfig | dict | None = None, /, **settings: Any) -> RmResult:
    """Reward-model accuracy as `personalign eval rm` computes it (in memory; `write_rm` writes it)."""
    return _evaluate_rm(_config(RmConfig, cfg, settings))


def train_user_model(cfg: UsersTrainConfig | dict | None = None, /, **settings: Any) -> TrainedUserModel:
    """Learn a user model on seen users and write its directory (`personalign users train`)."""
    return _train_user_model(_config(UsersTrainConfig, cfg, settings), progress=False)


def evaluate_user_model(cfg: UsersEvalConfig | dict | None = None, /, **settings: Any) -> UsersEvalResult:
    """A user model's accuracy on unseen users at each number of shots (`personalign users eval`, in memory)."""
    return _evaluate_user_model(_config(UsersEvalConfig, cfg, settings), progress=False)


def generate(cfg: GenerateConfig | dict | None = None, /, *, backend: Backend | None = None, **settings: Any) -> Path:
    """Generate one response per record into the run directory `out` (as `personalign eval generate`)."""
    return generate_responses(_config(GenerateConfig, cfg, settings), backend)


def judge(base_dir: str | os.PathLike, test_dir: str | os.PathLike, backend: Backend | BackendConfig | dict,
          **options: Any) -> JudgeResult:
    """Pairwise win rate of the test run over the base run under a judge backend (`personalign eval judge`)."""
    return judge_runs(base_dir, test_dir, _backend(backend), **options)


def infer_personas(source: Any, backend: Backend | BackendConfig | dict, out_path: str | os.PathLike,
                   **options: Any) -> InferStats:
    """Infer chosen/rejected personas for every record of `source` into `out_path` (`personalign persona infer`)."""
    return _infer_personas(with_record_files({"data": source})["data"], _backend(backend), out_path, **options)


def _backend(backend: Backend | BackendConfig | dict) -> Backend:
    if isinstance(backend, dict):
        backend = BackendConfig.model_validate(backend)
    return make_backend(backend) if isinstance(backend, BackendConfig) else backend

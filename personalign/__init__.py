"""personalign: personalized preference alignment of language models.

The package's face: it names the Python API (`personalign.api`, loaded on first use, so that
`import personalign` stays light) and sits above every part it names; no module of the package
imports it.
"""
import os

# OpenMP threads that busy-wait at every barrier make torch up to 20x slower when the cores are
# shared with another process; sleeping waiters cost little when they are not. Set before torch
# loads (it reads the variable once); an explicit setting by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from personalign.version import __version__

_API = ("train", "TrainConfig", "TrainResult", "evaluate_accuracy", "AccuracyConfig", "generate", "GenerateConfig",
        "judge", "infer_personas", "read_examples", "make_backend", "BackendConfig", "evaluate_rm", "RmConfig",
        "train_user_model", "UsersTrainConfig", "evaluate_user_model", "UsersEvalConfig", "load_user_model", "USER_MODELS")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module("personalign.api"), name)
    raise AttributeError(f"module 'personalign' has no attribute {name!r}")

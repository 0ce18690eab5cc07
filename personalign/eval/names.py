"""The evaluation stage's vocabulary (protocols, judge presets, suite methods): what configs and the CLI
name without importing the scoring engine, so that `personalign eval ... --help` starts at once."""
from __future__ import annotations

from typing import Literal, get_args

Protocol = Literal["alignx"]  # AlignX's released evaluation protocol (see `AccuracyConfig.protocol`)
JudgePreset = Literal["default", "prometheus", "prometheus-mnemonic"]
PRESETS: tuple[str, ...] = get_args(JudgePreset)
SuiteMethod = Literal["ica", "pba"]

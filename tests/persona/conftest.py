"""Persona tests import the rule-based fake backend from `fake_llm.py` beside this file."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def write_records(tmp_path):
    """Write records as JSONL under tmp_path and return the path."""

    def write(records: list[dict], name: str = "data.jsonl") -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        return path

    return write

"""docs/python-api.md: its code blocks run, in order, in one namespace; the API names import from `personalign`."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import personalign

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"


def test_api_names_import_from_the_package():
    for name in ("train", "TrainConfig", "evaluate_accuracy", "generate", "judge", "infer_personas", "read_examples",
                 "make_backend"):
        assert callable(getattr(personalign, name)), name
    with pytest.raises(AttributeError):
        personalign.no_such_thing  # noqa: B018


@pytest.mark.duration(14)
def test_python_api_doc_runs(default_model_dir, one_torch_thread):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 3
    namespace: dict = {}
    for n, block in enumerate(blocks, 1):
        exec(compile(block, f"{DOC.name} block {n}", "exec"), namespace)  # noqa: S102 - the documented code
    assert namespace["result"].global_step == 1

"""A tiny model served on a free loopback port for the whole module; it stops when the module ends."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test here runs a tiny model."""


@pytest.fixture(scope="module")
def tiny_backend(tiny_lm):
    from personalign.llm.local import LocalBackend

    return LocalBackend(*tiny_lm, batch_size=4)


@pytest.fixture(scope="module")
def served(tiny_backend):
    """Base URL of `personalign serve` (persona view, chat template, prompts echoed) over the tiny model."""
    from personalign.serve.app import create_app, serve_in_background

    app = create_app(tiny_backend, view="persona", max_batch=4, echo_prompt=True, model_name="tiny")
    with serve_in_background(app) as url:
        yield url

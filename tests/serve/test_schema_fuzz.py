"""Every route of `personalign serve --memory` meets malformed input generated from the server's own
OpenAPI schema (schemathesis): no answer may be a 500. A bounded number of examples per route keeps
it to seconds on the tiny model."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from personalign.memory.store import MemoryStore
from personalign.serve.app import create_app, serve_in_background

KEY = {"Authorization": "Bearer admin"}


@pytest.fixture(scope="module")
def api_schema(tiny_backend, tmp_path_factory):
    """The OpenAPI schema of a memory server (SQLite, 16 new tokens at most) served on a free port."""
    store = MemoryStore(f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'users.db'}")
    app = create_app(tiny_backend, view="ica", memory=store, api_key="admin", model_name="tiny", max_tokens_limit=16,
                     max_body_bytes=20_000)
    with serve_in_background(app) as url:
        yield schemathesis.openapi.from_url(url.removesuffix("/v1") + "/openapi.json")
    store.close()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_route_answers_malformed_input_with_a_500(api_schema, mode):
    """Each operation of the schema, up to 25 cases that fit it and 25 that break it (wrong types, missing
    and extra fields, out-of-range values), derandomized: the same cases every run."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/completions", "/v1/feedback",
                                              "/v1/rewards", "/v1/users/{user_id}/history", "/v1/users/{user_id}"}
    nothing_to_break = []
    for operation in operations:
        @given(operation.as_strategy(generation_mode=mode))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def call(case):
            case.call_and_validate(headers=KEY, checks=[not_a_server_error])

        try:
            call()
        except Unsatisfiable:  # negative mode: no body and at most a string path parameter: nothing to break
            nothing_to_break.append(operation.path)
    assert set(nothing_to_break) <= {"/v1/models", "/v1/users/{user_id}/history", "/v1/users/{user_id}"}

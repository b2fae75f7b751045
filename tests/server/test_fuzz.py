"""The published OpenAPI, fuzzed by schemathesis: whatever a client sends, the answer is never a
5xx and never a dropped connection. Every operation gets schema-shaped (positive) and
schema-breaking (negative) requests from each role (admin, editor, viewer) and from an agent's
credential, over real HTTP to a real server holding the example estate, a provisioned version and
an enrolled agent, on SQLite and PostgreSQL.

Bounded on purpose (a few examples per operation and caller, a fixed seed, no example database):
the run is reproducible in CI and takes about half a minute per backend."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from tests.server.conftest import Api, ok
from tests.server.estates import provision_example

EXAMPLES = 4
"""Requests per operation and generation mode, spread over the callers."""
CALLERS = ("admin", "editor", "viewer", "agent")


@pytest.fixture
def target(api: Api) -> tuple[Api, dict[str, str]]:
    provision_example(api)
    enroll = ok(api.post("/enrollment-tokens", {"name": "fuzz", "reusable": True}), 201)
    body = {"token": enroll["token"], "inventory": {"hostname": "fuzz-agent", "addresses": ["10.99.0.1"]}}
    agent = ok(api.post("/agent/enroll", body), 201)["credential"]
    return api, {**api.tokens, "agent": agent}


def operations(api: Api) -> list[schemathesis.APIOperation]:
    """Every operation the server publishes (its own /openapi.json, fetched over HTTP)."""
    spec: dict[str, Any] = ok(api.client.get("/openapi.json"))
    schema = schemathesis.openapi.from_dict(spec)
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.slow
def test_no_request_from_any_caller_gets_a_5xx(target: tuple[Api, dict[str, str]]) -> None:
    api, secrets = target
    found = operations(api)
    assert len(found) > 40
    base = str(api.client.base_url).rstrip("/")
    with requests.Session() as session:
        for operation in found:
            _fuzz(operation, GenerationMode.POSITIVE, base, session, secrets)
            with contextlib.suppress(Unsatisfiable):  # nothing in its schema can be broken (any text)
                _fuzz(operation, GenerationMode.NEGATIVE, base, session, secrets)


def _fuzz(
    operation: schemathesis.APIOperation,
    mode: GenerationMode,
    base: str,
    session: requests.Session,
    secrets: dict[str, str],
) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(operation.as_strategy(generation_mode=mode), st.sampled_from(CALLERS))
    def check(case: schemathesis.Case, who: str) -> None:
        headers = {"Authorization": f"Bearer {secrets[who]}"}
        response = case.call(base_url=base, session=session, headers=headers, timeout=30)
        case.validate_response(response, checks=[not_a_server_error], headers=headers)

    check()

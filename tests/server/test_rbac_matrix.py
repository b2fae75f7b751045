"""Every operation of the published API, with every kind of caller: no token is 401 everywhere
(but /healthz), viewers cannot change anything, editors cannot manage tokens or agents, agent
credentials reach only the agent endpoints and API tokens never reach them. Derived from the
OpenAPI document, so a new endpoint is covered the day it is added."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from microseg.server import config
from microseg.store import database
from tests.server.conftest import Api, make_settings, ok

ADMIN_ONLY = ("/api/v1/tokens", "/api/v1/enrollment-tokens", "/api/v1/agents/{ident}")
ADMIN_OPERATIONS = {("DELETE", "/api/v1/flows")}
"""Admin-only operations on paths whose other methods are not (purging flow data)."""
OPEN = {("GET", "/healthz"), ("POST", "/api/v1/agent/enroll")}
SIGNED = "/api/v1/hooks/"
"""Signed webhooks: no token of any kind gets in, only a signature (tests/server/test_quarantine.py)."""


@pytest.fixture
def settings(database_url: str) -> config.ServerSettings:
    """With a webhook configured, so that its route exists and refuses every token."""
    return make_settings(database_url, hook_secrets=("edr=secret",))


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """Authorization does not depend on the backend (the API suite runs both)."""
    yield database.sqlite_url(tmp_path / "data")


def _operations(api: Api) -> list[tuple[str, str]]:
    spec: dict[str, Any] = api.client.get("/openapi.json").json()
    return [(m.upper(), p) for p, item in spec["paths"].items() for m in item]


def _call(api: Api, who: str, method: str, template: str) -> int:
    path = template.replace("{tier}", "application").replace("{number}", "1")
    path = path.replace("{name}", "x").replace("{ident}", "x")
    headers = {} if who == "none" else {"Authorization": f"Bearer {api.tokens.get(who, who)}"}
    return api.client.request(method, path, headers=headers, json={}).status_code


def _writes(method: str, path: str) -> bool:
    return method != "GET" and path != "/api/v1/explain"  # explaining a verdict reads only


def test_every_operation_refuses_callers_without_the_right(api: Api) -> None:
    made = ok(api.post("/enrollment-tokens", {"name": "t"}), 201)
    body = {"token": made["token"], "inventory": {"hostname": "a1", "addresses": ["10.1.0.1"]}}
    api.tokens["agent"] = ok(api.as_("none").post("/agent/enroll", body), 201)["credential"]
    operations = _operations(api)
    assert len(operations) > 40
    wrong: list[tuple[str, str, str, int]] = []
    for method, path in operations:
        agent_path = path.startswith("/api/v1/agent/")
        if path.startswith(SIGNED):
            wrong += [(who, method, path, got) for who in ("none", "viewer", "editor", "admin", "agent")
                      if (got := _call(api, who, method, path)) != 401]  # fmt: skip
            continue
        admin_only = path.startswith(ADMIN_ONLY) or (method, path) in ADMIN_OPERATIONS
        expected = {
            "none": None if (method, path) in OPEN else 401,
            "viewer": 403 if agent_path or admin_only or _writes(method, path) else None,
            "editor": 403 if agent_path or admin_only else None,
            "agent": None if agent_path else 403,
        }
        for who, status in expected.items():
            if (method, path) in OPEN and who != "none":
                continue
            got = _call(api, who, method, path)
            if (status is not None and got != status) or (status is None and got in (401, 403)):
                wrong.append((who, method, path, got))
    assert wrong == []

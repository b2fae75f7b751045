"""The first agent start does not enforce by surprise (issue 16): a workload declared in git without
a mode, applied with `microseg apply` and adopted by an agent whose token says `visibility`, starts
in visibility, and its ruleset says so; a workload whose file says `mode: enforce` keeps enforce.
`apply` says beforehand which workloads will enforce from their first agent start."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from microseg.cli import main
from microseg.server import config
from tests.server.conftest import Api, make_settings, ok
from tests.server.estates import provision_example

FILES = """\
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: plain-1, labels: {env: dev, role: dns}}
spec: {addresses: [10.20.5.1]}
---
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: strict-1, labels: {env: dev, role: dns}}
spec: {addresses: [10.20.5.2], mode: enforce}
"""


@pytest.fixture
def settings(database_url: str) -> config.ServerSettings:
    return make_settings(database_url, enroll_per_minute=10_000)


def cli(api: Api, *args: str) -> tuple[int, str]:
    base = ["--server", str(api.client.base_url), "--token", api.tokens["admin"]]
    result = CliRunner().invoke(main.app, [*base, *args])
    return result.exit_code, result.output


def applied(api: Api, tmp_path: Path, *more: str) -> str:
    """`microseg apply` of FILES, as a person with hosts already in git runs it; its output."""
    tree = tmp_path / "git" / "workloads.yaml"
    tree.parent.mkdir(parents=True, exist_ok=True)
    tree.write_text(FILES)
    code, out = cli(api, "apply", "-f", str(tree), *more)
    assert code == 0, out
    return out


def adopt(api: Api, name: str, address: str) -> Api:
    """An agent enrolling onto `name` with a visibility token bound to it."""
    body = {"name": name, "labels": {"env": "dev"}, "mode": "visibility", "workloads": [name]}
    made: dict[str, Any] = ok(api.post("/enrollment-tokens", body), 201)
    inventory = {"hostname": name, "addresses": [address], "os": "linux"}
    answer = ok(api.as_("none").post("/agent/enroll", {"token": made["token"], "inventory": inventory}), 201)
    return api.as_(answer["credential"])


def test_a_workload_declared_without_a_mode_enrolls_into_visibility(api: Api, tmp_path: Path) -> None:
    provision_example(api)
    applied(api, tmp_path)
    assert "mode" not in ok(api.get("/workloads/plain-1"))["spec"]  # the dump did not make it explicit
    agent = adopt(api, "plain-1", "10.20.5.1")
    assert ok(api.get("/workloads/plain-1"))["spec"]["mode"] == "visibility"
    assert ok(agent.get("/agent/ruleset"))["workload"]["mode"] == "visibility"
    records = ok(api.get("/audit", target="Workload/plain-1"))["items"]
    (record,) = [r for r in records if r["action"] == "enroll-adopted"]
    assert "mode" not in record["details"]["before"]["spec"]
    assert record["details"]["after"]["spec"]["mode"] == "visibility"


def test_a_workload_declared_enforce_keeps_enforce_whatever_the_token_says(api: Api, tmp_path: Path) -> None:
    provision_example(api)
    applied(api, tmp_path)
    agent = adopt(api, "strict-1", "10.20.5.2")
    assert ok(api.get("/workloads/strict-1"))["spec"]["mode"] == "enforce"
    assert ok(agent.get("/agent/ruleset"))["workload"]["mode"] == "enforce"


def test_apply_says_which_workloads_enforce_from_their_first_agent_start(api: Api, tmp_path: Path) -> None:
    out = applied(api, tmp_path)
    assert "1 workload will enforce from their first agent start: strict-1" in out
    found = json.loads(applied(api, tmp_path, "-o", "json"))
    assert found["firstStart"] == {"enforce": ["strict-1"], "alert": []}

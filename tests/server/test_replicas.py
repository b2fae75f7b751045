"""Proofs with real server processes: two replicas on one PostgreSQL provisioning at once keep
version numbers unique and gap-free and every agent converges to the last version; a killed and
restarted server loses no provisioned version, audit record or acknowledged flow batch."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from microseg.store import database, migrate, tokens
from tests import postgres
from tests.server import processes
from tests.server.estates import example, rule

ROUNDS = 6


def admin_token(url: str) -> str:
    db = database.Database(url)
    migrate.upgrade(db)
    with db.write() as conn:
        token = tokens.create_api(conn, "proof", "admin", "test")[1]
    db.dispose()
    return token


def client(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=60)


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres.schema() as url:
        yield url


def _provisioner(api: httpx.Client, worker: str, numbers: list[int], refused: list[int]) -> None:
    for i in range(ROUNDS):
        body = rule("application", f"{worker}-{i}", 5000 + hash((worker, i)) % 90_000, "role=web", "role=db",
                    [{"port": 10_000 + i}])  # fmt: skip
        assert api.post("/rules", json=body).status_code == 201
        answer = api.post("/versions", json={"note": f"{worker} round {i}"})
        if answer.status_code == 409:  # another replica provisioned our edit along with its own
            refused.append(i)
            continue
        assert answer.status_code == 201, answer.text
        numbers.append(answer.json()["number"])


def _enroll(api: httpx.Client, name: str, address: str) -> httpx.Client:
    token = api.post("/enrollment-tokens", json={"name": name}).json()["token"]
    labels = {"env": "prod", "app": "crm", "role": "web"}
    api.post("/labelrules", json={"apiVersion": "microseg.io/v1", "kind": "LabelRule", "metadata": {"name": f"lr-{name}"},
                                  "spec": {"match": {"hostname": name}, "labels": labels}})  # fmt: skip
    body = {"token": token, "inventory": {"hostname": name, "addresses": [address]}}
    answer = httpx.post(str(api.base_url).rstrip("/") + "/agent/enroll", json=body, timeout=30)
    assert answer.status_code == 201, answer.text
    enrolled = answer.json()
    return httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {enrolled['credential']}"},
                        timeout=60)  # fmt: skip


@pytest.mark.postgres
def test_two_replicas_provisioning_at_once_number_versions_without_gaps(pg_url: str, tmp_path: Path) -> None:
    token = admin_token(pg_url)
    with contextlib.ExitStack() as stack:
        url_a = stack.enter_context(processes.server(pg_url, tmp_path / "a.log"))
        url_b = stack.enter_context(processes.server(pg_url, tmp_path / "b.log"))
        a, b = stack.enter_context(client(url_a, token)), stack.enter_context(client(url_b, token))
        assert a.post("/apply", json={"documents": example()}).status_code == 200
        agents = [
            stack.enter_context(_enroll(a if i % 2 else b, f"agent-{i}", f"10.66.0.{i + 1}"))
            for i in range(4)
        ]
        found: dict[str, list[int]] = {"a": [], "b": []}
        refused: list[int] = []
        workers = [threading.Thread(target=_provisioner, args=(api, name, found[name], refused))
                   for api, name in ((a, "a"), (b, "b"))]  # fmt: skip
        for w in workers:
            w.start()
        for w in workers:
            w.join(120)
        numbers = sorted(found["a"] + found["b"])
        assert numbers == list(range(1, len(numbers) + 1)), numbers
        assert len(numbers) + len(refused) == 2 * ROUNDS and len(numbers) >= ROUNDS
        listed = [v["number"] for v in b.get("/versions", params={"limit": 1000}).json()["items"]]
        assert listed == numbers[::-1]
        audited = a.get("/audit", params={"target": "version/", "limit": 1000}).json()["items"]
        assert sorted(int(r["target"].split("/")[1]) for r in audited) == numbers
        last = f"v{numbers[-1]}"
        for agent in agents:
            assert _converged(agent) == last


def _converged(agent: httpx.Client) -> str:
    """Long-poll until the document stops changing; return its version."""
    known: str | None = None
    version = ""
    for _ in range(50):
        answer = agent.get("/agent/ruleset", params={"known": known or "", "wait": 1})
        if answer.status_code == 304:
            return version
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        known, version = body["hash"], body["policyVersion"]
    raise AssertionError("the agent never converged")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield database.sqlite_url(tmp_path / "data")
        return
    with postgres.schema() as url:
        yield url


def test_a_killed_server_restarts_with_every_version_audit_record_and_flow_batch(
    any_url: str, tmp_path: Path
) -> None:
    token = admin_token(any_url)
    log = tmp_path / "server.log"
    batch = {"batch_id": "b-1", "records": [
        {"direction": "in", "src": "10.77.2.11", "dst": "10.66.1.1", "dport": 3306, "proto": "tcp",
         "first_seen": time.time() - 60, "last_seen": time.time(), "verdict": "blocked",
         "rule": "security/dev-never-reaches-prod"}
    ]}  # fmt: skip
    with processes.killable_server(any_url, log) as (url, process):
        api = client(url, token)
        assert api.post("/apply", json={"documents": example()}).status_code == 200
        assert api.post("/versions", json={"note": "one"}).status_code == 201
        assert api.delete("/rules/security/dev-never-reaches-prod").status_code == 204
        assert api.post("/versions", json={"note": "two"}).status_code == 201
        agent = _enroll(api, "agent-r", "10.66.1.1")
        assert agent.post("/agent/flows", json=batch).json()["stored"] is True
        audit_before = api.get("/audit", params={"limit": 10_000}).json()["items"]
        processes.stop(process, hard=True)
        api.close()
        agent.close()
    with processes.killable_server(any_url, log) as (url, _):
        api = client(url, token)
        assert [v["note"] for v in api.get("/versions").json()["items"]] == ["two", "one"]
        assert api.get("/audit", params={"limit": 10_000}).json()["items"] == audit_before
        assert len(api.get("/flows").json()["items"]) == 1
        agent = httpx.Client(base_url=api.base_url, headers=agent.headers, timeout=30)
        assert agent.post("/agent/flows", json=batch).json()["stored"] is False
        assert agent.get("/agent/ruleset").json()["policyVersion"] == "v2"
        api.close()
        agent.close()

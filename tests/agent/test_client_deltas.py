"""The agent's client and ruleset deltas against a real server (SQLite, no namespaces needed): a
live inventory change and a provision each reach the agent as a delta and leave it holding exactly
the server's document; a delta altered on the way (a proxy in between) is thrown away, the whole
document fetched, and the bad one never handed out."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from microseg import errors
from microseg.agent import client as api
from microseg.model import rulesetdelta
from microseg.server import app as server_app
from microseg.store import database, tokens
from tests.server import running
from tests.server.conftest import make_settings

ADDRESS = "10.77.9.1"
FORGED = "10.77.99.99"


def _client(name: str, address: str) -> dict[str, Any]:
    return {"apiVersion": "microseg.io/v1", "kind": "Workload",
            "metadata": {"name": name, "labels": {"role": "client"}},
            "spec": {"kind": "unmanaged", "addresses": [address]}}  # fmt: skip


def _policy(*ports: int) -> dict[str, Any]:
    return {"apiVersion": "microseg.io/v1", "kind": "Policy", "metadata": {"name": "t"},
            "spec": {"tier": "application", "rules": [
                {"name": "client-to-web", "priority": 100, "action": "allow", "from": [{"selector": "role=client"}],
                 "to": [{"selector": "role=web"}], "services": [{"port": p} for p in ports]}]}}  # fmt: skip


class Server:
    """The server's URL, an admin's HTTP client and the enrolled agent's credential."""

    def __init__(self, url: str, admin: httpx.Client, credential: str) -> None:
        self.url, self.admin, self.credential = url, admin, credential

    def provision(self, *documents: dict[str, Any]) -> None:
        applied = self.admin.post("/apply", json={"documents": list(documents)})
        assert applied.status_code == 200, applied.text
        made = self.admin.post("/versions", json={"note": "test"})
        assert made.status_code in (200, 201), made.text

    def apply(self, *documents: dict[str, Any]) -> None:
        applied = self.admin.post("/apply", json={"documents": list(documents)})
        assert applied.status_code == 200, applied.text

    def whole(self) -> dict[str, Any]:
        """The agent's current document as the server sends it whole."""
        found = httpx.get(
            self.url + "/api/v1/agent/ruleset", headers={"Authorization": f"Bearer {self.credential}"}
        )
        assert found.status_code == 200 and found.headers["content-type"].startswith("application/json")
        body: dict[str, Any] = found.json()
        return body


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    settings = make_settings(database.sqlite_url(tmp_path / "data"))
    db = database.Database(settings.database)
    app = server_app.create_app(settings, db)
    with db.write() as conn:
        admin = tokens.create_api(conn, "test-admin", "admin", "test")[1]
    with (
        running.serve(app) as url,
        httpx.Client(base_url=url + "/api/v1", headers={"Authorization": f"Bearer {admin}"}) as http,
    ):
        made = http.post(
            "/enrollment-tokens", json={"name": "web", "labels": {"role": "web"}, "mode": "enforce"}
        )
        assert made.status_code == 201, made.text
        enrolling = api.Client(url)
        credential = enrolling.enroll(made.json()["token"], {"hostname": "web-1", "addresses": [ADDRESS]})
        enrolling.close()
        yield Server(url, http, credential["credential"])
    db.dispose()


def _members(doc: dict[str, Any]) -> set[str]:
    return {n for s in doc["addressSets"].values() for n in s["networks"]}


def test_a_provision_and_an_inventory_change_arrive_as_deltas_and_make_the_servers_document(
    server: Server,
) -> None:
    agent = api.Client(server.url, server.credential)
    server.provision(_client("client-a", "10.77.9.10"), _policy(8080))
    first = agent.ruleset(None, 0)
    assert first is not None and agent.deltas == api.DeltaCounts(whole=1)
    assert first.to_dict() == server.whole()

    server.apply(_client("client-b", "10.77.9.20"))  # live: only a set's members move
    moved = agent.ruleset(first.hash, 5)
    assert moved is not None and "10.77.9.20/32" in _members(moved.to_dict())
    assert moved.to_dict() == server.whole()
    assert agent.deltas == api.DeltaCounts(applied=1, whole=1)

    server.provision(_policy(8080, 8443))  # a provision: one entry changes
    provisioned = agent.ruleset(moved.hash, 5)
    assert provisioned is not None and provisioned.hash != moved.hash
    assert provisioned.to_dict() == server.whole()
    assert agent.deltas == api.DeltaCounts(applied=2, whole=1)
    assert agent.ruleset(provisioned.hash, 0) is None  # nothing changed since
    agent.close()


class _Forger(http.server.BaseHTTPRequestHandler):
    """Forwards GETs to the server; adds an address to every delta on the way back."""

    upstream = ""
    seen: ClassVar[list[tuple[str, str]]] = []

    def do_GET(self) -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "accept")}
        self.seen.append((self.path, headers.get("Accept", "")))
        found = httpx.get(self.upstream + self.path, headers=headers, timeout=30)
        body, media = found.content, found.headers.get("content-type", "")
        if media.startswith(rulesetdelta.MEDIA_TYPE):
            body = json.dumps(_forged(json.loads(body))).encode()
        self.send_response(found.status_code)
        for key in ("content-type", "etag"):
            if key in found.headers:
                self.send_header(key, found.headers[key])
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def _forged(delta: dict[str, Any]) -> dict[str, Any]:
    """The same delta, letting one more address into a set."""
    sets = delta["addressSets"]
    for change in sets.values():
        if change is not None:
            change.setdefault("add" if "add" in change else "networks", []).append(f"{FORGED}/32")
            return delta
    sets["forged"] = {"description": "", "networks": [f"{FORGED}/32"]}
    return delta


@pytest.fixture
def forger(server: Server) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    handler = type("Forger", (_Forger,), {"upstream": server.url, "seen": []})
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{proxy.server_address[1]}", handler.seen
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_an_altered_delta_is_thrown_away_and_the_whole_document_fetched(
    server: Server, forger: tuple[str, list[tuple[str, str]]]
) -> None:
    url, seen = forger
    agent = api.Client(url, server.credential)
    server.provision(_client("client-a", "10.77.9.10"), _policy(8080))
    first = agent.ruleset(None, 0)
    assert first is not None
    server.apply(_client("client-b", "10.77.9.20"))
    seen.clear()
    found = agent.ruleset(first.hash, 5)
    assert found is not None and found.to_dict() == server.whole()
    assert f"{FORGED}/32" not in _members(found.to_dict())
    assert agent.deltas == api.DeltaCounts(refused=1, whole=2)
    (asked, accept), (refetched, plain) = seen
    assert f"known={first.hash.replace(':', '%3A')}" in asked and rulesetdelta.MEDIA_TYPE in accept
    assert "known" not in refetched and rulesetdelta.MEDIA_TYPE not in plain
    agent.close()


def test_a_delta_that_does_not_fit_leaves_the_held_document_alone(server: Server) -> None:
    agent = api.Client(server.url, server.credential)
    server.provision(_client("client-a", "10.77.9.10"), _policy(8080))
    first = agent.ruleset(None, 0)
    assert first is not None
    base = first.to_dict()
    server.apply(_client("client-b", "10.77.9.20"))
    answer = httpx.get(server.url + "/api/v1/agent/ruleset", params={"known": first.hash},
                       headers={"Authorization": f"Bearer {server.credential}", "Accept": rulesetdelta.MEDIA_TYPE})  # fmt: skip
    assert answer.headers["content-type"].startswith(rulesetdelta.MEDIA_TYPE)
    delta = answer.json()
    for bad in (
        _forged(json.loads(answer.text)),  # the hash check fails
        {**delta, "base": "sha256:" + "1" * 64},  # for another document
        {**delta, "addressSets": {name: {"add": [], "remove": [FORGED]} for name in base["addressSets"]}},
        {**delta, "ingress": {"keep": [99, 99], "entries": []}},
    ):
        with pytest.raises(errors.ValidationError):
            agent.apply_delta(base, bad)
    assert agent.deltas.applied == 0
    # still held: the server's delta to it applies, through the ordinary long-poll
    found = agent.ruleset(first.hash, 0)
    assert found is not None and found.to_dict() == server.whole()
    assert agent.deltas == api.DeltaCounts(applied=1, whole=1)
    agent.close()

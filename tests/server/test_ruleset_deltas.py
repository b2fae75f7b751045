"""The ruleset feed's deltas: an agent that takes them gets what changed, and the result is exactly
the document it would have fetched whole; a delta never starts from another workload's document."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from microseg.model import ruleset, rulesetdelta
from microseg.server import config
from tests.server.conftest import Api, make_settings, ok, problem
from tests.server.estates import provision_example, rule
from tests.server.test_agents import enroll

DELTAS = {"Accept": f"{rulesetdelta.MEDIA_TYPE}, application/json"}
WEB = {"env": "prod", "app": "crm", "role": "web"}


@pytest.fixture
def settings(database_url: str) -> config.ServerSettings:
    return make_settings(database_url, enroll_per_minute=20)


def _poll(agent: Api, known: str | None, *, deltas: bool = True) -> httpx.Response:
    params: dict[str, Any] = {"wait": 5}
    if known:
        params["known"] = known
    return agent.call("GET", "/agent/ruleset", headers=DELTAS if deltas else None, **params)


def _whole(agent: Api) -> dict[str, Any]:
    return ok(agent.get("/agent/ruleset"))  # type: ignore[no-any-return]


def test_a_provision_reaches_an_agent_as_the_delta_to_exactly_the_new_document(api: Api) -> None:
    agent = enroll(api, "web-9", "10.77.1.99", labels=WEB)
    provision_example(api)
    first = _poll(agent, None)
    assert first.headers["content-type"] == "application/json"  # nothing held yet: the whole document
    held = first.json()
    ok(
        api.post("/rules", rule("application", "lb-to-web9", 991, "role=lb", "role=web", [{"port": 8080}])),
        201,
    )
    ok(api.post("/versions", {"note": "v2"}), 201)
    answer = _poll(agent, held["hash"])
    assert answer.status_code == 200 and answer.headers["content-type"] == rulesetdelta.MEDIA_TYPE
    delta = answer.json()
    assert delta["base"] == held["hash"] and answer.headers["etag"] == f'"{delta["hash"]}"'
    assert [e["ref"] for e in delta["ingress"]["entries"]] == ["application/lb-to-web9"]
    assert len(answer.content) < len(json.dumps(held)) / 3
    applied = rulesetdelta.apply(held, delta)
    assert ruleset.RulesetDocument.from_dict(applied).hash == delta["hash"]
    assert applied == _whole(agent)


def test_a_relabel_of_a_peer_is_sent_as_the_members_that_moved(api: Api) -> None:
    agent = enroll(api, "web-9", "10.77.1.99", labels=WEB)
    provision_example(api)
    held = _poll(agent, None).json()
    enroll(api, "lb-9", "10.77.1.97", labels={"env": "prod", "app": "crm", "role": "lb"})
    answer = _poll(agent, held["hash"])
    assert answer.headers["content-type"] == rulesetdelta.MEDIA_TYPE
    delta = answer.json()
    moved = [c for c in delta["addressSets"].values() if c and "add" in c]
    assert moved and all(c["add"] == ["10.77.1.97/32"] and c["remove"] == [] for c in moved)
    assert "ingress" not in delta and "egress" not in delta
    assert rulesetdelta.apply(held, delta) == _whole(agent)


def test_no_delta_without_asking_or_from_another_workloads_document(api: Api) -> None:
    web = enroll(api, "web-9", "10.77.1.99", labels=WEB)
    db = enroll(api, "db-9", "10.77.1.98", labels={"env": "prod", "app": "crm", "role": "db"})
    provision_example(api)
    web_held = _poll(web, None).json()
    _poll(db, None)
    ok(
        api.post("/rules", rule("application", "lb-to-web9", 991, "role=lb", "role=web", [{"port": 8080}])),
        201,
    )
    ok(api.post("/versions", {"note": "v2"}), 201)
    plain = _poll(web, web_held["hash"], deltas=False)
    assert plain.headers["content-type"] == "application/json" and plain.json() == _whole(web)
    # db-9's agent names web-9's document as the one it holds: a delta from it would tell db-9
    # what web-9's document held, so the whole of db-9's own document comes back instead.
    foreign = _poll(db, web_held["hash"])
    assert foreign.headers["content-type"] == "application/json"
    assert foreign.json()["workload"]["name"] == "db-9" and foreign.json() == _whole(db)


def test_a_hash_this_replica_never_sent_gets_the_whole_document(api: Api) -> None:
    agent = enroll(api, "web-9", "10.77.1.99", labels=WEB)
    provision_example(api)
    answer = _poll(agent, "sha256:" + "1" * 64)
    assert answer.headers["content-type"] == "application/json" and answer.json() == _whole(agent)


def test_the_long_poll_refuses_unknown_credentials_and_api_tokens_before_waiting(api: Api) -> None:
    """The credential is looked up with the rest of the feed's round, and still before any wait."""
    provision_example(api)
    started = time.monotonic()
    assert problem(api.as_("msa_0000_forged").get("/agent/ruleset", wait=30), 401)["status"] == 401
    assert problem(api.get("/agent/ruleset", wait=30), 403)["status"] == 403
    assert problem(api.as_("none").get("/agent/ruleset", wait=30), 401)["status"] == 401
    assert time.monotonic() - started < 20

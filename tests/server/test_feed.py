"""The feed parks long-polls with nothing new to take: a change answers the agents whose document
moved, and every other poll keeps waiting until its deadline (then 304), across any number of
changes. The runtime under it computes every document's hash with each build, and a status read
during a build gets the last engine rather than waiting for the next."""

from __future__ import annotations

import threading
import time

import httpx

from microseg.server import config, runtime
from tests.server.conftest import Api, ok
from tests.server.estates import provision_example
from tests.server.test_agents import enroll
from tests.server.test_trust_roles import waiting

WEB = {"env": "prod", "app": "crm", "role": "web"}
LONER = {"env": "lab", "app": "loner", "role": "solo"}
"""Labels no rule of the example estate names: another workload's mode leaves its document alone."""


def _set_mode(api: Api, mode: str) -> None:
    ok(api.call("PUT", "/workloads/web-9/mode", json={"mode": mode}))


def _park(
    agent: Api, known: str, wait: float, out: dict[str, tuple[httpx.Response, float]]
) -> threading.Thread:
    def poll() -> None:
        started = time.monotonic()
        answer = agent.get("/agent/ruleset", known=known, wait=wait)
        out["r"] = (answer, time.monotonic() - started)

    thread = threading.Thread(target=poll)
    thread.start()
    return thread


def _until_waiting(api: Api, count: int) -> None:
    deadline = time.monotonic() + 10
    while waiting(api) != count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert waiting(api) == count


def test_a_change_answers_only_the_polls_whose_document_moved(api: Api) -> None:
    web, loner = (
        enroll(api, "web-9", "10.77.1.99", labels=WEB),
        enroll(api, "solo-1", "10.77.1.98", labels=LONER),
    )
    provision_example(api)
    web_hash, loner_hash = ok(web.get("/agent/ruleset"))["hash"], ok(loner.get("/agent/ruleset"))["hash"]
    got_web: dict[str, tuple[httpx.Response, float]] = {}
    got_loner: dict[str, tuple[httpx.Response, float]] = {}
    threads = [_park(web, web_hash, 20, got_web), _park(loner, loner_hash, 4, got_loner)]
    _until_waiting(api, 2)
    _set_mode(api, "enforce")  # a new ruleset for web-9, none for the loner
    threads[0].join(10)
    answer, _ = got_web["r"]
    assert answer.status_code == 200 and answer.json()["hash"] != web_hash
    _until_waiting(api, 1)  # the loner's poll was asked again and parked again
    _set_mode(api, "alert")  # a second change while it waits
    threads[1].join(10)
    answer, took = got_loner["r"]
    assert answer.status_code == 304 and answer.headers.get("etag") is None
    assert took >= 3.9  # kept to its deadline, not answered by either change
    assert ok(loner.get("/agent/ruleset"))["hash"] == loner_hash
    assert waiting(api) == 0


def test_a_status_read_during_a_build_gets_the_last_engine_and_its_hashes_at_once(
    api: Api, settings: config.ServerSettings
) -> None:
    enroll(api, "web-9", "10.77.1.99", labels=WEB)
    provision_example(api)
    rt = runtime.Runtime(settings, api.db)
    before = rt.compiled()
    assert before.engine is not None
    managed = sorted(n for n, w in before.workloads.items() if w.managed)
    hashes = rt.expected_hashes(managed)
    assert hashes == {n: before.engine.document(n).hash for n in managed}
    _set_mode(api, "enforce")  # the state row moves: the next read builds again
    with rt._building:  # another thread is building the next engine
        assert rt.compiled(latest=False) is before
        assert rt.expected_hashes(managed, latest=False) == hashes
    after = rt.compiled()
    assert after.key != before.key and after.engine is not None
    assert rt.expected_hash("web-9") == after.engine.document("web-9").hash != hashes["web-9"]

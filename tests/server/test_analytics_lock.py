"""The analyses and rollout readiness never hold the engine lock (`Runtime.snapshot`): they take
seconds, and while one ran the feed could not answer agents, nor a quarantine reach its workload.
They answer while another thread holds the lock; the snapshot they read follows every change
(also one the engine in use took in place) and is never the engine in use."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from microseg.server import config, runtime
from tests.server.conftest import Api, ok, second_server
from tests.server.estates import provision_example
from tests.server.test_analytics_api import APP, AT, DB, WEB
from tests.server.test_flow_summary import enroll, flow, send

READS = (
    ("/flows/map", {"groupBy": "role"}),
    ("/flows/simulate", {}),
    ("/flows/rule-hits", {}),
    ("/flows/recommend", {"groupBy": "env,role"}),
    ("/rollout/readiness", {"scope": "env=prod"}),
)


@pytest.fixture
def replica(api: Api, settings: config.ServerSettings) -> Iterator[tuple[Api, runtime.Runtime]]:
    """The example estate with flows, and a second server over the same database (its runtime is
    the one the test holds the lock of)."""
    provision_example(api)
    agent = enroll(api, "prod-db-1", DB, {})
    assert send(
        agent, "b-1", flow(APP, DB, 3306, AT, process="mysqld"), flow(WEB, DB, 3306, AT, verdict="blocked")
    )
    with second_server(api, settings, timeout=10) as found:
        yield found


def test_the_analyses_and_readiness_answer_while_the_engine_lock_is_held(
    replica: tuple[Api, runtime.Runtime],
) -> None:
    other, rt = replica

    def answer(path: str, query: dict[str, str]) -> dict[str, Any]:
        body: dict[str, Any] = ok(other.get(path, **query))
        body.pop("window", None)  # readiness dates its window from now
        return body

    first = {path: answer(path, query) for path, query in READS}  # compiled, snapshot taken
    with rt.engine_lock:  # as the feed or a build holds it
        for path, query in READS:
            assert answer(path, query) == first[path], path  # within the client's 10 s


def test_the_snapshot_follows_every_change_and_is_never_the_engine_in_use(
    replica: tuple[Api, runtime.Runtime],
) -> None:
    other, rt = replica
    snapshot = rt.snapshot()
    assert snapshot is not None and snapshot is not rt.compiled().engine
    assert rt.snapshot() is snapshot  # shared while nothing changes: its caches stay warm
    in_use = rt.compiled().engine
    ok(other.post("/labels/bulk", {"selector": "role=db,env=prod", "add": {"tier": "data"}}))
    assert rt.compiled().engine is in_use  # the engine in use took the relabel in place
    moved = rt.snapshot()
    assert moved is not None and moved is not snapshot and moved is not in_use
    assert moved.effective_labels("prod-db-1").get("tier") == "data"
    assert snapshot.effective_labels("prod-db-1").get("tier") is None  # the old one never changed
    graph = ok(other.get("/flows/map", groupBy="tier"))
    assert "group:tier=data" in {n["id"] for n in graph["nodes"]}

"""A replica that follows inventory changes one workload at a time compiles exactly what a
replica starting afresh compiles: same documents, same hashes, after every change."""

from __future__ import annotations

from microseg.engine import engine as engines
from microseg.server import config, kinds
from microseg.server.runtime import Runtime
from microseg.store import objects, state, versions
from tests.server.conftest import Api, ok
from tests.server.estates import doc, provision_example, workload


def _fresh_hashes(rt: Runtime) -> dict[str, str]:
    with rt.db.read() as conn:
        number, _ = state.read(conn)
        version = versions.get(conn, number)
        live = objects.of_kinds(conn, kinds.LIVE)
    assert version is not None
    docs = engines.PolicyEngine(rt.estate(version.documents, live, number)).documents()
    return {name: d.hash for name, d in docs.items()}


def _followed_hashes(rt: Runtime) -> dict[str, str]:
    eng = rt.compiled().engine
    assert eng is not None
    return {name: d.hash for name, d in eng.documents().items()}


def test_incremental_updates_equal_a_fresh_compile(api: Api) -> None:
    provision_example(api)
    follower = Runtime(
        config.ServerSettings(database=str(api.db.url), control_plane=("10.77.0.1:8440",)), api.db
    )
    first = follower.compiled().engine
    assert _followed_hashes(follower) == _fresh_hashes(follower)
    steps = [
        lambda: api.post("/workloads/prod-db-1/quarantine"),
        lambda: api.post("/labels/bulk", {"selector": "env=dev", "add": {"env": "stage"}}),
        lambda: api.put("/workloads/prod-web-2", workload("prod-web-2", "10.77.1.112",
                                                          {"env": "prod", "app": "crm", "role": "web"})),
        lambda: api.post("/workloads", workload("new-app-1", "10.77.1.23", {"env": "prod", "app": "crm", "role": "app"})),
        lambda: api.delete("/workloads/prod-cache-1"),
        lambda: api.post("/modescopes", doc("ModeScope", "prod-alert", {"selector": "env=prod", "mode": "alert"})),
        lambda: api.post("/workloads/prod-db-1/release"),
    ]  # fmt: skip
    for step in steps:
        assert step().status_code in (200, 201, 204)
        assert _followed_hashes(follower) == _fresh_hashes(follower)
    assert follower.compiled().engine is first  # followed, never recompiled
    ok(api.post("/labelrules", doc("LabelRule", "web-by-name", {"match": {"hostname": "*-web-*"},
                                                               "labels": {"tier": "front"}})), 201)  # fmt: skip
    assert _followed_hashes(follower) == _fresh_hashes(follower)
    assert follower.compiled().engine is not first  # a label rule is policy: compiled afresh


def test_a_change_the_incremental_path_refuses_half_way_is_compiled_afresh(api: Api) -> None:
    provision_example(api)
    follower = Runtime(
        config.ServerSettings(database=str(api.db.url), control_plane=("10.77.0.1:8440",)), api.db
    )
    first = follower.compiled().engine
    one, two = ok(api.get("/workloads/prod-web-1")), ok(api.get("/workloads/prod-web-2"))
    swapped = []
    for mine, theirs in ((one, two), (two, one)):
        body = {k: v for k, v in mine.items() if k != "status"}
        swapped.append({**body, "spec": {**body["spec"], "addresses": theirs["spec"]["addresses"]}})
    ok(api.post("/apply", {"documents": swapped}))  # two addresses trade places in one step
    assert _followed_hashes(follower) == _fresh_hashes(follower)
    assert follower.compiled().engine is not first  # never the half-updated engine

"""Analytics over the flow summaries: the dependency map, the draft simulated against history, and
least-privilege recommendations (accepted into the draft on request).

Fed by the summary store (a time window of rows) and two engines: the active version's and the
draft's; feeds the API. The work itself is `microseg.analytics` (pure functions over rows and
engines); this module only picks the window, the engines and the output form.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from microseg import errors
from microseg.analytics import collecting, depmap, recommend, rulehits, simulate
from microseg.engine import engine as engines
from microseg.server import auth, deps, routes_flows, routes_policy, service
from microseg.server.auth import Principal
from microseg.server.runtime import Runtime
from microseg.store import rulecounters, summaries

Rt = Annotated[Runtime, Depends(deps.runtime)]
Viewer = Annotated[Principal, Depends(auth.viewer)]
Editor = Annotated[Principal, Depends(auth.editor)]
Since = Annotated[
    str | None, Query(max_length=32, description="epoch seconds, or 30m, 24h, 7d; default: all kept")
]
Until = Annotated[float | None, Query(ge=0, le=2**40)]
Keys = Annotated[str, Query(max_length=500, description="label keys, comma separated")]
router = APIRouter(prefix="/api/v1/flows", tags=["analytics"])


def _keys(text: str, name: str) -> tuple[str, ...]:
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    if any(len(k) > 317 or " " in k for k in keys):
        raise errors.ValidationError(f"{name} {text!r}: give label keys separated by commas", name)
    return keys


@collecting.while_paused  # as the analyses are: the read builds a row per key of the window
def _rows(rt: Runtime, since: str | None, until: float | None) -> list[Sequence[Any]]:
    # plain value rows (`summaries.records`), not dicts: the analytics check and read them by position
    start = routes_flows.parse_since(since, time.time())
    with rt.db.read() as conn:
        return summaries.records(conn, since=start, until=until)


def _active(rt: Runtime) -> engines.PolicyEngine:
    """The active version as `Runtime.snapshot` has it. An analysis takes seconds and must not
    hold the engine lock meanwhile: the feed, and every build (a quarantine too), need it. The
    draft's engine is built for each request, so it is the request's own."""
    found = rt.snapshot()
    if found is None:
        raise errors.LookupFailedError("nothing is provisioned yet")
    return found


def _engines(rt: Runtime) -> tuple[engines.PolicyEngine, engines.PolicyEngine]:
    return _active(rt), routes_policy.engine(rt, "draft")


@router.get("/map", summary="The dependency map: nodes by workload or label group, edges with verdicts")
async def dependency_map(
    *,
    rt: Rt,
    _: Viewer,
    since: Since = None,
    until: Until = None,
    group_by: Annotated[str, Query(alias="groupBy", max_length=500)] = "",
    within: Keys = "",
    draft: bool = True,
    format: Annotated[str, Query(pattern="^(json|dot)$")] = "json",
) -> Response:
    keys, scope = _keys(group_by, "groupBy"), _keys(within, "within")

    def work() -> Any:
        active, drafted = _engines(rt)
        rows = _rows(rt, since, until)
        return depmap.build(rows, active, drafted if draft else None, keys, scope)

    graph = await run_in_threadpool(work)
    if format == "dot":
        return PlainTextResponse(depmap.to_dot(graph), media_type="text/vnd.graphviz")
    return _json(graph.to_json())


@router.get(
    "/simulate", summary="Replay the window's flows against the draft: what becomes blocked or allowed"
)
async def simulation(
    rt: Rt,
    _: Viewer,
    since: Since = None,
    until: Until = None,
    format: Annotated[str, Query(pattern="^(json|markdown|table)$")] = "json",
) -> Response:
    def work() -> simulate.Simulation:
        active, drafted = _engines(rt)
        rows = _rows(rt, since, until)
        return simulate.simulate(rows, active, drafted)

    result = await run_in_threadpool(work)
    if format == "markdown":
        return PlainTextResponse(result.to_markdown(), media_type="text/markdown")
    if format == "table":
        return PlainTextResponse(result.to_table())
    return _json(result.to_json())


@router.get("/rule-hits", summary="Per rule: connections (flows), packets (counters), last hit; unused rules")
async def rule_hits(rt: Rt, _: Viewer, since: Since = None, until: Until = None) -> Response:
    def work() -> rulehits.RuleHits:
        active = _active(rt)
        rows = _rows(rt, since, until)
        with rt.db.read() as conn:
            counted = rulecounters.window(conn, routes_flows.parse_since(since, time.time()), until)
        return rulehits.rule_hits(rows, active, counted)

    return _json((await run_in_threadpool(work)).to_json())


def _recommendation(
    rt: Runtime, since: str | None, until: float | None, keys: str
) -> recommend.Recommendation:
    # Against the draft: the proposal completes what is being edited, and is appended after it.
    drafted = routes_policy.engine(rt, "draft")
    rows = _rows(rt, since, until)
    return recommend.recommend(rows, drafted, _keys(keys, "groupBy"))


@router.get("/recommend", summary="Least-privilege allow rules for the window's flows, with coverage")
async def recommendation(
    rt: Rt,
    _: Viewer,
    group_by: Annotated[str, Query(alias="groupBy", max_length=500)],
    since: Since = None,
    until: Until = None,
) -> Response:
    result = await run_in_threadpool(_recommendation, rt, since, until, group_by)
    return _json(result.to_json())


@router.post("/recommend/accept", summary="Write the recommended rules into the draft (all or nothing)")
async def accept(
    rt: Rt,
    who: Editor,
    group_by: Annotated[str, Query(alias="groupBy", max_length=500)],
    since: Since = None,
    until: Until = None,
) -> dict[str, Any]:
    result = await run_in_threadpool(_recommendation, rt, since, until, group_by)
    if not result.documents:
        return {"applied": [], "coverage": result.coverage}
    applied = await run_in_threadpool(service.apply, rt, who, list(result.documents))
    return {"applied": applied, "coverage": result.coverage}


def _json(body: dict[str, Any]) -> Response:
    return JSONResponse(body)

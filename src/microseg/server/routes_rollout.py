"""Rollout: scopes and their modes, a scope's readiness, and promotion (see `server.rollout`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool

from microseg.model import workloads
from microseg.server import auth, deps, models, rollout
from microseg.server.auth import Principal
from microseg.server.runtime import Runtime

Rt = Annotated[Runtime, Depends(deps.runtime)]
Viewer = Annotated[Principal, Depends(auth.viewer)]
Editor = Annotated[Principal, Depends(auth.editor)]
router = APIRouter(prefix="/api/v1/rollout", tags=["rollout"])
DEFAULTS = rollout.Thresholds()
Scope = Annotated[str, Query(min_length=1, max_length=1000, description="kubectl selector, e.g. env=prod")]
Since = Annotated[str | None, Query(max_length=32, description="window: 30m, 24h, 7d (default 7d)")]


@router.get("", summary="Rollout scopes and their modes")
def list_scopes(rt: Rt, _: Viewer) -> dict[str, Any]:
    return {"items": rollout.scopes(rt)}


@router.get("/readiness", summary="A scope's readiness: would-block flows, coverage, agents in sync")
async def readiness(
    *,
    rt: Rt,
    _: Viewer,
    scope: Scope,
    since: Since = None,
    min_coverage: Annotated[float, Query(alias="minCoverage", ge=0, le=100)] = DEFAULTS.min_coverage,
    max_would_block: Annotated[int, Query(alias="maxWouldBlock", ge=0)] = DEFAULTS.max_would_block,
    min_in_sync: Annotated[float, Query(alias="minInSync", ge=0, le=100)] = DEFAULTS.min_in_sync,
) -> dict[str, Any]:
    limits = rollout.Thresholds(min_coverage, max_would_block, min_in_sync)
    return await run_in_threadpool(rollout.readiness, rt, scope, since, limits)


@router.post("/promote", summary="Set a scope's mode when it is ready (409 with the report otherwise)")
async def promote(rt: Rt, who: Editor, body: models.PromoteRequest) -> dict[str, Any]:
    limits = rollout.Thresholds(body.min_coverage, body.max_would_block, body.min_in_sync)

    def run() -> dict[str, Any]:
        return rollout.promote(
            rt,
            who,
            body.scope,
            workloads.Mode(body.to),
            since=body.since,
            limits=limits,
            force=body.force,
            note=body.note,
        )

    return await run_in_threadpool(run)

"""Tokens, enrollment tokens, agents, the audit log, events, flow queries and /metrics."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from microseg import errors
from microseg.engine import engine as engines
from microseg.model import services
from microseg.server import auth, deps, metrics, models, responses, service, status
from microseg.server.auth import Principal
from microseg.server.runtime import Runtime
from microseg.store import agents, audit, events, flows, tokens

Rt = Annotated[Runtime, Depends(deps.runtime)]
Viewer = Annotated[Principal, Depends(auth.viewer)]
Admin = Annotated[Principal, Depends(auth.admin)]
router = APIRouter(prefix="/api/v1", tags=["admin"])
After = Annotated[int, Query(ge=0, le=2**63 - 1)]  # ids are 64-bit columns
Limit = Annotated[int, Query(ge=1, le=10_000)]


@router.get("/tokens", summary="API tokens (never their secrets)")
def list_tokens(rt: Rt, _: Admin) -> dict[str, Any]:
    with rt.db.read() as conn:
        return {"items": [t.__dict__ for t in tokens.list_api(conn)]}


@router.post("/tokens", status_code=201, summary="Create an API token (its text is shown once)")
def create_token(rt: Rt, who: Admin, body: models.TokenRequest) -> JSONResponse:
    """Without `owner`, the new token belongs to whoever holds the creating token."""
    owner = body.owner or who.owner or who.name
    with rt.db.write() as conn:
        row, text = tokens.create_api(conn, body.name, body.role, who.actor, owner)
        audit.record(
            conn,
            who.actor,
            "create-token",
            f"token/{row.id}",
            {"name": body.name, "role": body.role, "owner": owner},
        )
    return JSONResponse({**row.__dict__, "token": text}, 201)


@router.delete("/tokens/{ident}", status_code=204, summary="Revoke an API token")
def revoke_token(rt: Rt, who: Admin, ident: str) -> Response:
    with rt.db.write() as conn:
        if not tokens.revoke_api(conn, ident):
            raise errors.LookupFailedError(f"no live token {ident!r}")
        audit.record(conn, who.actor, "revoke-token", f"token/{ident}", {})
    return Response(status_code=204)


@router.get("/enrollment-tokens", summary="Enrollment tokens (never their secrets)")
def list_enrollment(rt: Rt, _: Admin) -> dict[str, Any]:
    with rt.db.read() as conn:
        return {"items": tokens.list_enrollment(conn)}


@router.post("/enrollment-tokens", status_code=201, summary="Create an enrollment token (shown once)")
def create_enrollment(rt: Rt, who: Admin, body: models.EnrollmentTokenRequest) -> JSONResponse:
    checked = dict(service.checked_labels(body.labels, "labels"))
    expires = time.time() + body.expiresIn if body.expiresIn else None
    with rt.db.write() as conn:
        row, text = tokens.create_enrollment(
            conn,
            body.name,
            checked,
            mode=body.mode,
            reusable=body.reusable,
            expires_at=expires,
            actor=who.actor,
            workloads=body.workloads,
            address_ranges=body.addressRanges,
        )
        audit.record(
            conn,
            who.actor,
            "create-enrollment-token",
            f"enrollment/{row['id']}",
            {
                "name": body.name,
                "labels": checked,
                "reusable": body.reusable,
                "workloads": body.workloads,
                "addressRanges": body.addressRanges,
            },
        )
    return JSONResponse({**row, "token": text}, 201)


@router.delete("/enrollment-tokens/{ident}", status_code=204, summary="Revoke an enrollment token")
def revoke_enrollment(rt: Rt, who: Admin, ident: str) -> Response:
    with rt.db.write() as conn:
        if not tokens.revoke_enrollment(conn, ident):
            raise errors.LookupFailedError(f"no live enrollment token {ident!r}")
        audit.record(conn, who.actor, "revoke-enrollment-token", f"enrollment/{ident}", {})
    return Response(status_code=204)


@router.get("/agents", summary="Agents with their state: in sync, stale, failed or tampered")
def list_agents(rt: Rt, _: Viewer) -> responses.AgentList:
    with rt.db.read() as conn:
        rows = agents.listing(conn)
    return responses.AgentList.model_validate({"items": [status.agent_json(rt, a) for a in rows]})


@router.delete("/agents/{ident}", status_code=204, summary="Revoke an agent's credential")
def revoke_agent(rt: Rt, who: Admin, ident: str) -> Response:
    with rt.db.write() as conn:
        if not agents.revoke(conn, ident):
            raise errors.LookupFailedError(f"no live agent {ident!r}")
        audit.record(conn, who.actor, "revoke-agent", f"agent/{ident}", {})
    return Response(status_code=204)


@router.get("/audit", summary="The append-only audit log, oldest first")
def read_audit(
    rt: Rt,
    _: Viewer,
    after: After = 0,
    limit: Limit = 100,
    target: Annotated[str | None, Query(max_length=400)] = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    with rt.db.read() as conn:
        return {"items": audit.query(conn, after=after, limit=limit, target=target, actor=actor)}


@router.get("/events", summary="Events: tamper, blocked, would-block, agent-offline, quarantine, ...")
def read_events(
    rt: Rt,
    _: Viewer,
    after: After = 0,
    limit: Limit = 100,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    workload: Annotated[str | None, Query(max_length=300)] = None,
) -> dict[str, Any]:
    with rt.db.read() as conn:
        return {"items": events.query(conn, after=after, limit=limit, kind=kind, workload=workload)}


@router.get("/flows", summary="Flow records by workload, address, port, verdict and time")
def read_flows(
    *,
    rt: Rt,
    _: Viewer,
    workload: Annotated[str | None, Query(max_length=300)] = None,
    address: Annotated[str | None, Query(max_length=64)] = None,
    port: Annotated[int | None, Query(ge=0, le=65535)] = None,
    verdict: Annotated[str | None, Query(pattern="^(allowed|blocked|would-block)$")] = None,
    since: Annotated[float | None, Query(ge=0, le=2**40)] = None,
    until: Annotated[float | None, Query(ge=0, le=2**40)] = None,
    after: After = 0,
    limit: Limit = 100,
    explain: bool = False,
) -> dict[str, Any]:
    """With `explain=true`, each flow also carries the active version's explained verdict."""
    q = flows.FlowQuery(workload, address, port, verdict, since, until, after, limit)
    with rt.db.read() as conn:
        items = flows.query(conn, q)
    if explain:
        engine = rt.compiled().engine
        with rt.engine_lock:
            for item in items:
                item["currentVerdict"] = None if engine is None else _explain(engine, item)
    return {"items": items}


def _explain(engine: engines.PolicyEngine, flow: dict[str, Any]) -> dict[str, Any] | None:
    """The verdict policy gives this flow now (None for what the engine cannot evaluate)."""
    try:
        proto = services.Protocol(flow["proto"])
        src, dst = engine.endpoint(flow["src"]), engine.endpoint(flow["dst"])
    except (ValueError, errors.UserError):
        return None
    port = flow["dport"] if proto.has_ports else None
    return engine.evaluate(src, dst, port, proto, process=flow.get("process")).to_dict()


plain = APIRouter(tags=["admin"])


@plain.get("/metrics", summary="Prometheus metrics (needs a viewer token)")
def api_metrics(rt: Rt, _: Viewer) -> PlainTextResponse:
    return PlainTextResponse(metrics.render(rt), media_type=metrics.CONTENT_TYPE)

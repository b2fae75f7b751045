"""The agent API: enrollment, heartbeat with inventory, the ruleset long-poll, status, flows.

An agent credential reads only its own workload's ruleset and writes only its own inventory,
status and flows: every handler works on the workload bound to the credential, never one named
in the request. The ruleset feed answers at once when the agent's known hash is stale and
otherwise waits (up to `wait` seconds) for the next change of the state row.
"""

from __future__ import annotations

import functools
import time
from typing import Annotated, Any

import pydantic
import sqlalchemy as sa
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError

from microseg.server import auth, deps, enrollment, ingest, longpoll, models, ratelimit
from microseg.server.auth import Principal
from microseg.server.problems import Problem
from microseg.server.runtime import Runtime
from microseg.store import agents, events, rulecounters

Rt = Annotated[Runtime, Depends(deps.runtime)]
Agent = Annotated[Principal, Depends(auth.agent)]
router = APIRouter(prefix="/api/v1/agent", tags=["agent"])


@router.post(
    "/enroll", status_code=201, summary="Enroll with an enrollment token; returns the agent credential"
)
def enroll(rt: Rt, request: Request, body: models.EnrollRequest) -> dict[str, Any]:
    if not rt.enroll_limit.allow(deps.client_address(request)):
        raise Problem(429, "Too many requests", "too many enrollment attempts; wait a minute")
    done = enrollment.enroll(rt, body)
    return {"agentId": done.agent_id, "credential": done.credential, "workload": done.workload}


@router.post("/heartbeat", summary="Report liveness and inventory (addresses, OS, listening sockets)")
def heartbeat(rt: Rt, who: Agent, body: models.Inventory) -> dict[str, Any]:
    _within_report_limit(rt, who, "heartbeat")
    return {"workload": who.workload, "changed": enrollment.heartbeat(rt, who, body)}


def _within_report_limit(rt: Runtime, who: Principal, what: str) -> None:
    """429 with Retry-After past `agent_reports_per_minute` for this agent and kind of report."""
    told = f"at most {rt.settings.agent_reports_per_minute} {what} reports per minute; send the next"
    _throttle(rt.report_limit, f"{what}:{who.id}", told)


def _throttle(limiter: ratelimit.RateLimit, key: str, told: str) -> None:
    """Count an attempt for `key`; past the limit, 429 with Retry-After ("`told` in N s")."""
    wait = limiter.wait(key)
    if wait:
        raise Problem(429, "Too many requests", f"{told} in {wait}s", headers={"Retry-After": str(wait)})


@router.post("/status", summary="Report the applied hash, data plane, errors, tampering and rule counters")
def report_status(rt: Rt, who: Agent, body: models.StatusReport) -> dict[str, Any]:
    _within_report_limit(rt, who, "status")
    with rt.db.write() as conn:
        if body.counters is not None:  # in the report's transaction: a refused report counts nothing
            rulecounters.record(rt.db, conn, _counter_report(who.workload, body.counters))
        before = agents.by_workload(conn, who.workload) or {}
        agents.seen(
            conn,
            who.id,
            applied_hash=body.appliedHash,
            dataplane=body.dataplane,
            errors=body.errors,
            warnings=body.warnings,
            tampered=body.tampered,
        )
        for incident in body.tamper:
            events.add(
                conn,
                "tamper",
                who.workload,
                f"{who.workload}: {incident.summary} outside microseg; "
                f"restored in {incident.restoredIn:.2f}s",
                {"dataplane": body.dataplane, **incident.model_dump()},
            )
        if body.tampered and not body.tamper and not before.get("tampered"):
            events.add(
                conn,
                "tamper",
                who.workload,
                f"{who.workload}: ruleset changed outside microseg; restored",
                {"dataplane": body.dataplane},
            )
        for item in body.expired:
            _record_expiry(conn, who.workload, item)
        if body.errors and not before.get("errors"):
            events.add(
                conn,
                "agent-failed",
                who.workload,
                f"{who.workload}: {body.errors[0]}",
                {"errors": body.errors},
            )
    return {"workload": who.workload}


def _record_expiry(conn: sa.Connection, workload: str, item: models.ExpiryReport) -> None:
    """An event when an expiry cut (or, not enforcing, would have cut) connections; an expiry that
    found none is no news (one rule can reach thousands of workloads)."""
    if not (item.cut or item.wouldCut):
        return
    kind = "exception-expired" if item.rule.startswith("exception/") else "rule-expired"
    said = f"cut {item.cut}" if item.cut else f"would cut {item.wouldCut} (not enforcing)"
    message = f"{workload}: {item.rule} expired; {said} connection(s) only it allowed"
    events.add(conn, kind, workload, message, item.model_dump())


def _counter_report(workload: str, counters: models.CounterReport) -> rulecounters.Report:
    rules = tuple(rulecounters.Reported(r.rule, r.packets, r.bytes) for r in counters.rules)
    return rulecounters.Report(workload, counters.epoch, rules, time.time())


@router.get(
    "/ruleset",
    summary="This agent's ruleset (long-poll: waits while `known` is current)",
    responses={
        200: {"description": "the ruleset document"},
        304: {"description": "unchanged"},
        204: {"description": "nothing provisioned yet"},
    },
)
async def ruleset(
    rt: Rt,
    credential: Annotated[str, Depends(auth.agent_credential)],
    *,
    known: Annotated[str | None, Query(max_length=longpoll.MAX_KNOWN)] = None,
    wait: Annotated[float, Query(ge=0, le=longpoll.MAX_WAIT)] = 0,
    if_none_match: Annotated[str | None, Header()] = None,
    accept: Annotated[str | None, Header(max_length=longpoll.MAX_ACCEPT)] = None,
) -> Response:
    """The workload is the credential's, looked up by the feed with the rest of its round. Most
    polls never reach this function: `longpoll.FastPath` answers them before the router."""
    return await longpoll.answer(rt, longpoll.ask(credential, known, if_none_match, accept), wait)


FLOW_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/FlowBatch"}}},
    }
}


@router.post(
    "/flows", summary="Upload a batch of flow records (idempotent per batch id)", openapi_extra=FLOW_BODY
)
async def upload_flows(rt: Rt, who: Agent, request: Request) -> dict[str, Any]:
    """Checked and trimmed by `ingest` (times, the agent's own addresses, bounded events); the
    answer counts the records stored and those dropped as `forged`."""
    limit = rt.settings.flow_uploads_per_minute
    told = f"at most {limit} flow batches per minute; keep the batch and send it again"
    _throttle(rt.flow_limit, who.id, told)
    # The body is validated here rather than by FastAPI: one pass from bytes to checked dicts is
    # less than half the cost of parsing, building models and dumping them again (the hot path).
    raw = await request.body()
    try:
        batch = models.FLOW_BATCH.validate_json(raw)
    except pydantic.ValidationError as exc:
        raise RequestValidationError(ingest.readable(exc)) from None
    if len(batch["records"]) > rt.settings.max_flow_batch:
        raise Problem(413, "Request too large", f"at most {rt.settings.max_flow_batch} records per batch")
    outcome = await run_in_threadpool(functools.partial(ingest.ingest, rt, who, batch, raw.decode()))
    return outcome.to_json()

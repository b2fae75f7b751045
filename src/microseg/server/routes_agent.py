"""The agent API: enrollment, heartbeat with inventory, the ruleset long-poll, status, flows.

An agent credential reads only its own workload's ruleset and writes only its own inventory,
status and flows: every handler works on the workload bound to the credential, never one named
in the request. The ruleset feed answers at once when the agent's known hash is stale and
otherwise waits (up to `wait` seconds) for the next change of the state row.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
from typing import Annotated, Any

import pydantic
import sqlalchemy as sa
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError

from microseg import errors
from microseg.server import auth, deps, kinds, models, service
from microseg.server.auth import Principal
from microseg.server.problems import Problem
from microseg.server.runtime import Runtime
from microseg.store import agents, audit, events, flows, objects, rulecounters, state, summaries, tokens

Rt = Annotated[Runtime, Depends(deps.runtime)]
Agent = Annotated[Principal, Depends(auth.agent)]
router = APIRouter(prefix="/api/v1/agent", tags=["agent"])
ENROLLER = Principal("enrollment", "", "enrollment")


def _workload_name(hostname: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.:-]+", "-", hostname).strip("-_.:")[:253]
    if not kinds.NAME.fullmatch(name):
        raise errors.ValidationError(
            f"hostname {hostname!r} does not make a workload name", "inventory.hostname"
        )
    return name


def _attributes(inv: models.Inventory) -> dict[str, str]:
    found = {"hostname": inv.hostname, "os": inv.os}
    if inv.kernel:
        found["kernel"] = inv.kernel
    return found


def _workload_doc(
    name: str, inv: models.Inventory, labels: dict[str, str], mode: str | None, old: dict[str, Any] | None
) -> dict[str, Any]:
    """The workload an agent's inventory describes; labels and mode someone set stay as they are."""
    spec: dict[str, Any] = dict((old or {}).get("spec") or {})
    spec.update(
        {
            "kind": inv.kind,
            "addresses": sorted(inv.addresses),
            "attributes": {**(spec.get("attributes") or {}), **_attributes(inv)},
        }
    )
    if mode and "mode" not in spec:
        spec["mode"] = mode
    meta: dict[str, Any] = {"name": name}
    merged = {**labels, **(((old or {}).get("metadata") or {}).get("labels") or {})}
    if merged:
        meta["labels"] = merged
    return {"apiVersion": kinds.API_VERSION, "kind": "Workload", "metadata": meta, "spec": spec}


@router.post(
    "/enroll", status_code=201, summary="Enroll with an enrollment token; returns the agent credential"
)
def enroll(rt: Rt, request: Request, body: models.EnrollRequest) -> dict[str, Any]:
    if not rt.enroll_limit.allow(deps.client_address(request)):
        raise Problem(429, "Too many requests", "too many enrollment attempts; wait a minute")
    name = _workload_name(body.inventory.hostname)
    with rt.db.write() as conn:
        token = tokens.consume_enrollment(conn, body.token)
        if token is None:
            raise Problem(401, "Unauthorized", "unknown, revoked, expired or used enrollment token")
        existing = agents.by_workload(conn, name)
        if existing is not None and existing["revoked_at"] is None:
            raise Problem(409, "Conflict", f"workload {name} already has an agent; revoke it first")
        if existing is not None:
            conn.execute(agents.T.delete().where(agents.T.c.id == existing["id"]))
        old = objects.get(conn, "Workload", name)
        doc = _workload_doc(name, body.inventory, token["labels"], token["mode"], old.doc if old else None)
        service.validate(rt, conn, {("Workload", name): doc})
        objects.put(conn, "Workload", name, doc, f"enrollment:{token['id']}")
        ident, credential = agents.create(conn, name, body.inventory.model_dump())
        audit.record(
            conn,
            f"enrollment:{token['id']}",
            "enroll",
            f"Workload/{name}",
            {"agent": ident, "before": old.doc if old else None, "after": doc},
        )
        state.bump_inventory(conn)
    rt.poke()
    return {"agentId": ident, "credential": credential, "workload": name}


@router.post("/heartbeat", summary="Report liveness and inventory (addresses, OS, listening sockets)")
def heartbeat(rt: Rt, who: Agent, body: models.Inventory) -> dict[str, Any]:
    with rt.db.write() as conn:
        old = objects.get(conn, "Workload", who.workload)
        if old is None:
            raise Problem(404, "Not found", f"workload {who.workload} was deleted; enroll again")
        doc = _workload_doc(who.workload, body, {}, None, old.doc)
        if doc != old.doc:
            service.validate(rt, conn, {("Workload", who.workload): doc})
            objects.put(conn, "Workload", who.workload, doc, who.actor)
            audit.record(
                conn, who.actor, "inventory", f"Workload/{who.workload}", {"before": old.doc, "after": doc}
            )
            state.bump_inventory(conn)
        agents.seen(conn, who.id, inventory=body.model_dump())
    rt.poke()
    return {"workload": who.workload, "changed": doc != old.doc}


@router.post("/status", summary="Report the applied hash, data plane, errors, tampering and rule counters")
def report_status(rt: Rt, who: Agent, body: models.StatusReport) -> dict[str, Any]:
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
    who: Agent,
    known: Annotated[str | None, Query(max_length=80)] = None,
    wait: Annotated[float, Query(ge=0, le=3600)] = 0,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    known = known or (if_none_match.strip().strip('"') if if_none_match else None)
    deadline = time.monotonic() + min(wait, rt.settings.long_poll_max)
    while True:
        changed = rt.changed_event()
        assert rt.feed is not None  # the app factory sets it
        doc = await rt.feed.document(who.workload)
        if doc is not None and doc[0] != known:
            return Response(doc[1], media_type="application/json", headers={"ETag": f'"{doc[0]}"'})
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return Response(status_code=204 if doc is None else 304)
        rt.metrics.feed_waiting += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)
        finally:
            rt.metrics.feed_waiting -= 1


FLOW_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/FlowBatch"}}}}}  # fmt: skip


@router.post(
    "/flows", summary="Upload a batch of flow records (idempotent per batch id)", openapi_extra=FLOW_BODY
)
async def upload_flows(rt: Rt, who: Agent, request: Request) -> dict[str, Any]:
    # The body is validated here rather than by FastAPI: one pass from bytes to checked dicts is
    # less than half the cost of parsing, building models and dumping them again (the hot path).
    raw = await request.body()
    try:
        batch = models.FLOW_BATCH.validate_json(raw)
    except pydantic.ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None
    if len(batch["records"]) > rt.settings.max_flow_batch:
        raise Problem(413, "Request too large", f"at most {rt.settings.max_flow_batch} records per batch")
    return await run_in_threadpool(functools.partial(_store_flows, rt, who, batch, raw.decode()))


def _store_flows(rt: Runtime, who: Principal, batch: models.FlowBatch, raw: str) -> dict[str, Any]:
    """Store the batch as sent (it is valid JSON, and re-encoding it would cost as much again)."""
    records = batch["records"]
    verdicts = [r["verdict"] for r in records]
    stored_form = flows.Batch(
        who.id,
        batch["batch_id"],
        who.workload,
        raw,
        len(records),
        min((r["first_seen"] for r in records), default=0.0),
        max((r["last_seen"] for r in records), default=0.0),
        verdicts.count("blocked"),
        verdicts.count("would-block"),
    )
    engine = rt.compiled(refresh=False).engine or rt.compiled().engine
    # judged before the write transaction, so that the database lock is not held while judging
    broken = rt.invariant_watch.events(engine, rt.engine_lock, who.workload, records) if engine else []
    with rt.db.write() as conn:
        stored = flows.store_batch(rt.db, conn, stored_form)
        if stored:
            # in the batch's own transaction: a batch sent twice is never summed twice
            summaries.add_batch(rt.db, conn, who.workload, records)
            refused = [r for r in records if r["verdict"] != "allowed"]
            events.add_many(conn, [*_flow_events(who.workload, refused), *broken])
    if stored:
        rt.metrics.ingested(len(records))
    return {"batchId": batch["batch_id"], "stored": stored, "records": len(records) if stored else 0}


def _flow_events(workload: str, refused: list[models.FlowRecord]) -> list[dict[str, Any]]:
    """One event per verdict and deciding rule in a batch, with a count and a few examples."""
    groups: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for r in refused:
        full: dict[str, Any] = {**models.FLOW_DEFAULTS, **r}
        groups.setdefault((full["verdict"], full["rule"]), []).append(full)
    return [
        {"kind": verdict, "workload": workload,
         "message": f"{workload}: {len(found)} {verdict} flow(s) by {rule or 'default deny'}, e.g. "
                    f"{found[0]['src']} -> {found[0]['dst']} {found[0]['dport']}/{found[0]['proto']}",
         "details": {"rule": rule, "count": len(found), "examples": found[:5]}}
        for (verdict, rule), found in groups.items()
    ]  # fmt: skip

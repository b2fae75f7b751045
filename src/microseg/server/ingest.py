"""Flow ingest: an agent's batch, trusted no further than its credential, stored once and told in
a bounded number of events.

Fed by `POST /api/v1/agent/flows` (`routes_agent.upload_flows`: authenticates, rate-limits and
parses the body, whose model already refuses ends that are not IP addresses and times that are not
finite); feeds the flow store (one row per batch), the summaries (folded in the same
transaction, so a batch sent twice counts once), the events table and the metrics.

An agent credential speaks for one workload, and a batch is believed only that far:

- **times**: first seen <= last seen, last seen no later than the server's clock plus
  `flow_clock_skew` (a far-future flow would never expire), first seen within the flow
  retention (an older one would be dropped within the hour). One record out of bounds refuses
  the batch: 422 naming the record and the field, nothing stored.
- **ends**: a record needs one of the workload's own addresses (its stored `spec.addresses`) on
  its own side: `src` going out, `dst` coming in. Anything else speaks for another workload and
  is forged: dropped (the rest is stored), counted in the answer, and reported in one
  `flow-forged` event per batch with examples.
- **events**: at most `MAX_RULE_EVENTS` per verdict and rule plus one per verdict for the rest,
  and one per broken invariant, however many records or distinct rule names the batch holds (the
  rule a record names is the agent's word).

What it deliberately does not do: judge verdicts (the agent's data plane decided them) or resolve
ends to workloads (the summary query and the analytics do that when they read).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pydantic

from microseg.engine.engine import PolicyEngine
from microseg.errors import ValidationError
from microseg.model import addresses
from microseg.server import models, runtime
from microseg.server.auth import Principal
from microseg.server.problems import Problem
from microseg.server.runtime import Runtime
from microseg.store import events, flows, objects, summaries

DAY = 86_400.0
MAX_RULE_EVENTS = 10
"""Events per batch for the biggest (verdict, rule) groups; the rest share one per verdict."""
EXAMPLES = 5
"""Records an event quotes."""


@dataclass(frozen=True)
class Outcome:
    """What ingest answers: whether the batch was new, records stored, records dropped as forged."""

    batch_id: str
    stored: bool
    records: int
    forged: int

    def to_json(self) -> dict[str, Any]:
        return {
            "batchId": self.batch_id,
            "stored": self.stored,
            "records": self.records,
            "forged": self.forged,
        }


def ingest(rt: Runtime, who: Principal, batch: models.FlowBatch, raw: str) -> Outcome:
    """Check, trim and store one batch. Cost: a pass over the records (times, ends), one read of
    the workload, a fold of the summaries in memory, then one INSERT for the batch and one upsert
    of its folded summaries in a write transaction; invariants are judged and summaries folded
    before it, so the write lock is not held while computing."""
    now = time.time()
    records = batch["records"]
    check_times(records, now + rt.settings.flow_clock_skew, now - rt.settings.flow_retention_days * DAY)
    kept, forged = split_forged(records, own_networks(rt, who.workload))
    engine = _engine(rt)
    broken = rt.invariant_watch.events(engine, rt.engine_lock, who.workload, kept) if engine else []
    told = [*flow_events(who.workload, kept), *broken, *forged_events(who, forged)]
    # the batch as sent when nothing was dropped: re-encoding would cost as much as parsing again
    data = json.dumps(kept) if forged else raw
    stored_form = _stored_form(who, batch["batch_id"], kept, data)
    folded = summaries.fold(who.workload, kept)  # before the transaction: SQLite writers queue
    with rt.db.write() as conn:
        stored = flows.store_batch(rt.db, conn, stored_form)
        if stored:  # in the batch's own transaction: a batch sent twice is never summed twice
            summaries.write(conn, folded)
            events.add_many(conn, told)
    if stored:
        rt.metrics.ingested(len(kept))
    return Outcome(batch["batch_id"], stored, len(kept) if stored else 0, len(forged))


def _engine(rt: Runtime) -> PolicyEngine | None:
    """The engine invariants are judged with: the last one built. When that found nothing
    provisioned, the state row is read again only once the watcher has seen it move (within
    `watch_interval`), not for every batch; before anything was built or watched, always."""
    built = rt.compiled(refresh=False)
    watched = rt.watched_key
    if built.engine is None and (built.key != watched or watched == runtime.UNREAD):
        built = rt.compiled()
    return built.engine


def _stored_form(who: Principal, batch_id: str, records: list[models.FlowRecord], data: str) -> flows.Batch:
    verdicts = [r["verdict"] for r in records]
    return flows.Batch(
        who.id,
        batch_id,
        who.workload,
        data,
        len(records),
        min((r["first_seen"] for r in records), default=0.0),
        max((r["last_seen"] for r in records), default=0.0),
        verdicts.count("blocked"),
        verdicts.count("would-block"),
    )


def readable(exc: pydantic.ValidationError) -> list[Any]:
    """The batch's validation errors, with "not an IP address" said so rather than as the address
    pattern (a screenful of regular expression)."""
    found = exc.errors(include_url=False, include_context=False)
    for error in found:
        if error["type"] == "string_pattern_mismatch" and error["loc"][-1] in ("src", "dst"):
            error["msg"] = "must be one IP address (IPv4 or IPv6; no CIDR, no name)"
    return list(found)


# -- times ----------------------------------------------------------------------------------------


def check_times(records: list[models.FlowRecord], latest: float, oldest: float) -> None:
    """Refuse the batch (422 naming the record and field) when a record's times are out of order,
    later than `latest` or start before `oldest`."""
    for index, r in enumerate(records):
        if not oldest <= r["first_seen"] <= r["last_seen"] <= latest:
            raise _bad_time(index, r, latest, oldest)


def _bad_time(index: int, r: models.FlowRecord, latest: float, oldest: float) -> Problem:
    first, last = r["first_seen"], r["last_seen"]
    if first > last:
        field, value, why = "first_seen", first, "is later than last_seen"
    elif last > latest:
        field, value, why = "last_seen", last, "is ahead of the server's clock (it would not expire)"
    else:
        field, value, why = "first_seen", first, "is older than the flow retention (it would expire at once)"
    where = f"records.{index}.{field}"
    return Problem(
        422,
        "Invalid request",
        f"{where} {value} {why}; nothing was stored",
        field=where,
        record=index,
        errors=[{"field": where, "message": why}],
    )


# -- ends -----------------------------------------------------------------------------------------


def own_networks(rt: Runtime, workload: str) -> list[addresses.Network]:
    """The workload's own addresses as stored (what its agent last reported, or an editor set)."""
    with rt.db.read() as conn:
        stored = objects.get(conn, "Workload", workload)
    if stored is None:
        raise Problem(404, "Not found", f"workload {workload} was deleted; enroll again")
    return list(_networks(stored.doc.get("spec", {}).get("addresses") or []))


def _networks(texts: Iterable[str]) -> Iterable[addresses.Network]:
    for text in texts:
        try:
            yield addresses.network(text)
        except ValidationError:
            continue  # the stored workload was validated; nothing here can be the agent's own


def split_forged(
    records: list[models.FlowRecord], own: list[addresses.Network]
) -> tuple[list[models.FlowRecord], list[models.FlowRecord]]:
    """(records with an own address on their own side, the others). Each distinct end is parsed
    once: a batch repeats the workload's few addresses."""
    mine: dict[str, bool] = {}
    kept: list[models.FlowRecord] = []
    forged: list[models.FlowRecord] = []
    for r in records:
        end = r["src"] if r["direction"] == "out" else r["dst"]
        found = mine.get(end)
        if found is None:
            found = mine[end] = addresses.contains(own, addresses.address(end))
        (kept if found else forged).append(r)
    return kept, forged


def forged_events(who: Principal, forged: list[models.FlowRecord]) -> list[dict[str, Any]]:
    """One `flow-forged` event for the batch's forged records (none when there are none)."""
    if not forged:
        return []
    first = forged[0]
    return [
        {
            "kind": "flow-forged",
            "workload": who.workload,
            "message": f"{who.workload}: agent {who.id} reported {len(forged)} flow record(s) without its "
            f"own address on its side, dropped; e.g. {first['src']} -> {first['dst']} "
            f"({first['direction']})",
            "details": {"agent": who.id, "count": len(forged), "examples": forged[:EXAMPLES]},
        }
    ]


# -- events ---------------------------------------------------------------------------------------

_Group = tuple[tuple[str, str | None], list[dict[str, Any]]]


def flow_events(workload: str, records: list[models.FlowRecord]) -> list[dict[str, Any]]:
    """One event per verdict and deciding rule for the `MAX_RULE_EVENTS` biggest groups of the
    batch's blocked and would-block records, and one per verdict for all other rules together."""
    groups: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for r in records:
        if r["verdict"] != "allowed":
            full: dict[str, Any] = {**models.FLOW_DEFAULTS, **r}
            groups.setdefault((full["verdict"], full["rule"]), []).append(full)
    ranked = sorted(groups.items(), key=lambda g: -len(g[1]))
    told = [
        _rule_event(workload, verdict, rule, found) for (verdict, rule), found in ranked[:MAX_RULE_EVENTS]
    ]
    return told + _rest_events(workload, ranked[MAX_RULE_EVENTS:])


def _rule_event(workload: str, verdict: str, rule: str | None, found: list[dict[str, Any]]) -> dict[str, Any]:
    e = found[0]
    return {
        "kind": verdict,
        "workload": workload,
        "message": f"{workload}: {len(found)} {verdict} flow(s) by {rule or 'default deny'}, e.g. "
        f"{e['src']} -> {e['dst']} {e['dport']}/{e['proto']}",
        "details": {"rule": rule, "count": len(found), "examples": found[:EXAMPLES]},
    }


def _rest_events(workload: str, rest: list[_Group]) -> list[dict[str, Any]]:
    by_verdict: dict[str, list[_Group]] = {}
    for group in rest:
        by_verdict.setdefault(group[0][0], []).append(group)
    return [_rest_event(workload, verdict, groups) for verdict, groups in by_verdict.items()]


def _rest_event(workload: str, verdict: str, groups: list[_Group]) -> dict[str, Any]:
    count = sum(len(found) for _, found in groups)
    rules = [rule for (_, rule), _ in groups]
    examples = [found[0] for _, found in groups[:EXAMPLES]]
    return {
        "kind": verdict,
        "workload": workload,
        "message": f"{workload}: {count} more {verdict} flow(s) by {len(rules)} other rule(s)",
        "details": {
            "rule": None,
            "count": count,
            "rules": len(rules),
            "ruleNames": rules[:EXAMPLES],
            "examples": examples,
        },
    }

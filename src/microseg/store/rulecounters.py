"""Rule counters: the per-rule packet and byte totals agents read from their data plane, turned
into what grew, per workload, rule and hour.

Fed by the agent status handler (`record`, in the report's own transaction); feeds rule hits
(`GET /flows/rule-hits`) through `window`, which sums an hour-bucketed time window over workloads.

Agents send monotonic totals per epoch (the lifetime of their data plane), never deltas. For each
workload and rule the store keeps the totals last reported: a report of the same epoch adds what
grew since (a report sent twice adds nothing the second time), a new epoch (the agent restarted,
its totals started from zero) adds its totals whole. What grew goes into the hour bucket of the
time the server saw it grow, and that time is the rule's last hit: the kernel says how much a
counter moved, not when, so hits are as precise as the agents' reading interval (10 s by default).

What it deliberately does not do: know rules or policy versions (a rule that is gone keeps its
counts until retention drops them), or merge with flows (`analytics.rulehits` does).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from microseg.store import database, schema, summaries

T = schema.rule_counters
HOURS = schema.rule_counter_hours

Row = dict[str, Any]


@dataclass(frozen=True)
class Reported:
    """One rule's totals in an agent's report."""

    rule: str
    packets: int
    bytes: int


@dataclass(frozen=True)
class Report:
    """One agent's counter report: its workload, epoch, the totals, and when the server got it."""

    workload: str
    epoch: str
    rules: tuple[Reported, ...]
    at: float


@dataclass(frozen=True)
class Growth:
    """What one rule's counters grew by since the report before."""

    rule: str
    packets: int
    bytes: int

    @property
    def grew(self) -> bool:
        return bool(self.packets or self.bytes)


def growth(previous: Mapping[str, Row], epoch: str, reported: Iterable[Reported]) -> list[Growth]:
    """Per reported rule, what it grew by against `previous` (stored rows by rule). Totals lower
    than the stored ones in the same epoch cannot come from a well-behaved agent; they are taken
    as a fresh start, like a new epoch, so counts are never negative."""
    out = []
    for r in reported:
        old = previous.get(r.rule)
        base = (old["reported_packets"], old["reported_bytes"]) if old and old["epoch"] == epoch else (0, 0)
        if r.packets < base[0] or r.bytes < base[1]:
            base = (0, 0)
        out.append(Growth(r.rule, r.packets - base[0], r.bytes - base[1]))
    return out


def _upsert(
    db: database.Database, table: sa.Table, keys: list[str], set_: Callable[[Any], dict[str, Any]]
) -> Any:
    """INSERT ... ON CONFLICT (keys) DO UPDATE SET `set_(excluded)`, on either dialect."""
    stmt = (sqlite if db.is_sqlite else postgresql).insert(table)
    return stmt.on_conflict_do_update(index_elements=keys, set_=set_(stmt.excluded))


def _replaced(columns: list[str]) -> Callable[[Any], dict[str, Any]]:
    return lambda new: {c: new[c] for c in columns}


def _added(new: Any) -> dict[str, Any]:
    later = sa.case((new.last_hit > HOURS.c.last_hit, new.last_hit), else_=HOURS.c.last_hit)
    return {"packets": HOURS.c.packets + new.packets, "bytes": HOURS.c.bytes + new.bytes, "last_hit": later}


def _state_rows(report: Report, grown: list[Growth], previous: Mapping[str, Row]) -> list[Row]:
    """The new state row of every rule whose report says something new (other epoch or growth)."""
    rows = []
    now = report.at
    for r, g in zip(report.rules, grown, strict=True):
        old = previous.get(r.rule)
        if old is not None and old["epoch"] == report.epoch and not g.grew:
            continue
        rows.append(
            {
                "workload": report.workload,
                "rule": r.rule,
                "epoch": report.epoch,
                "reported_packets": r.packets,
                "reported_bytes": r.bytes,
                "packets": (old["packets"] if old else 0) + g.packets,
                "bytes": (old["bytes"] if old else 0) + g.bytes,
                "last_hit": now if g.grew else (old["last_hit"] if old else None),
                "updated_at": now,
            }
        )
    return rows


def record(db: database.Database, conn: sa.Connection, report: Report) -> list[Growth]:
    """Fold one report in; what grew. Reports of one workload are serialized (a lock for the
    transaction), so two replicas never both add the same growth."""
    if not report.rules:
        return []
    db.lock(conn, f"rule-counters:{report.workload}")
    stored = conn.execute(sa.select(T).where(T.c.workload == report.workload))
    previous = {row.rule: dict(row._mapping) for row in stored}
    grown = growth(previous, report.epoch, report.rules)
    states = _state_rows(report, grown, previous)
    if states:
        columns = [c for c in states[0] if c not in ("workload", "rule")]
        conn.execute(_upsert(db, T, ["workload", "rule"], _replaced(columns)), states)
    bucket = summaries.bucket_of(report.at)
    hours = [
        {
            "bucket": bucket,
            "workload": report.workload,
            "rule": g.rule,
            "packets": g.packets,
            "bytes": g.bytes,
            "last_hit": report.at,
        }
        for g in grown
        if g.grew
    ]
    if hours:
        conn.execute(_upsert(db, HOURS, ["bucket", "workload", "rule"], _added), hours)
    return [g for g in grown if g.grew]


def window(conn: sa.Connection, since: float | None = None, until: float | None = None) -> list[Row]:
    """Per rule, what counters grew by in the hour buckets overlapping [since, until), summed over
    workloads: {rule, packets, bytes, lastHit, workloads}, most packets first."""
    stmt = sa.select(
        HOURS.c.rule,
        sa.func.sum(HOURS.c.packets).label("packets"),
        sa.func.sum(HOURS.c.bytes).label("bytes"),
        sa.func.max(HOURS.c.last_hit).label("last_hit"),
        sa.func.count(sa.distinct(HOURS.c.workload)).label("workloads"),
    ).group_by(HOURS.c.rule)
    if since is not None:
        stmt = stmt.where(HOURS.c.last_hit >= since)
    if until is not None:
        stmt = stmt.where(HOURS.c.bucket < until)
    rows = [
        {
            "rule": r.rule,
            "packets": int(r.packets),
            "bytes": int(r.bytes),
            "lastHit": float(r.last_hit),
            "workloads": int(r.workloads),
        }
        for r in conn.execute(stmt)
    ]
    return sorted(rows, key=lambda r: (-r["packets"], r["rule"]))


def totals(conn: sa.Connection, workload: str) -> dict[str, Row]:
    """One workload's counted totals per rule: {packets, bytes, lastHit} (None: never grew)."""
    stmt = sa.select(T).where(T.c.workload == workload)
    return {
        r.rule: {"packets": r.packets, "bytes": r.bytes, "lastHit": r.last_hit} for r in conn.execute(stmt)
    }


def expire(conn: sa.Connection, before: float) -> int:
    """Drop hour buckets whose last growth was before `before` (the flow summaries' retention);
    the per-rule state stays, it is what the next report is compared with. Rows dropped."""
    return int(conn.execute(sa.delete(HOURS).where(HOURS.c.last_hit < before)).rowcount)

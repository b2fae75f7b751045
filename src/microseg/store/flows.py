"""Flow batches from agents: stored once per batch id, queried by workload, address, port, verdict.

A batch row and its flows are inserted in one transaction; a batch id seen again is skipped by
the primary key (INSERT ... ON CONFLICT DO NOTHING), so a retrying agent never doubles a flow.
Rows go in as one multi-row executemany, the cheapest path on both dialects.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from microseg.store import database, schema

BATCHES = schema.flow_batches
FLOWS = schema.flows
COLUMNS = (
    "direction",
    "src",
    "dst",
    "dport",
    "proto",
    "process",
    "user",
    "bytes",
    "packets",
    "first_seen",
    "last_seen",
    "verdict",
    "rule",
)


def store_batch(
    db: database.Database,
    conn: sa.Connection,
    *,
    agent_id: str,
    batch_id: str,
    workload: str,
    records: list[dict[str, Any]],
) -> bool:
    """Store a batch; False when this agent's batch id was stored before (nothing is written)."""
    marker = {"agent_id": agent_id, "batch_id": batch_id, "received_at": time.time(), "records": len(records)}
    inserted = conn.execute(
        db.insert_ignoring_duplicates(BATCHES).values(**marker).returning(BATCHES.c.batch_id)
    )
    if inserted.first() is None:  # rowcount is not reliable here on every driver; RETURNING is
        return False
    if records:
        conn.execute(sa.insert(FLOWS), [{"workload": workload, **r} for r in records])
    return True


@dataclass(frozen=True)
class FlowQuery:
    """Filters of a flow query; None means "any"."""

    workload: str | None = None
    address: str | None = None
    port: int | None = None
    verdict: str | None = None
    since: float | None = None
    until: float | None = None
    after_id: int = 0
    limit: int = 100


def query(conn: sa.Connection, q: FlowQuery) -> list[dict[str, Any]]:
    """Flows matching every given filter, oldest id first."""
    stmt = sa.select(FLOWS).where(FLOWS.c.id > q.after_id).order_by(FLOWS.c.id).limit(q.limit)
    if q.workload is not None:
        stmt = stmt.where(FLOWS.c.workload == q.workload)
    if q.address is not None:
        stmt = stmt.where(sa.or_(FLOWS.c.src == q.address, FLOWS.c.dst == q.address))
    if q.port is not None:
        stmt = stmt.where(FLOWS.c.dport == q.port)
    if q.verdict is not None:
        stmt = stmt.where(FLOWS.c.verdict == q.verdict)
    if q.since is not None:
        stmt = stmt.where(FLOWS.c.last_seen >= q.since)
    if q.until is not None:
        stmt = stmt.where(FLOWS.c.last_seen < q.until)
    return [row._asdict() for row in conn.execute(stmt)]


def counts(conn: sa.Connection) -> tuple[int, int]:
    """(batches, flow rows) stored."""
    batches = conn.execute(sa.select(sa.func.count()).select_from(BATCHES)).scalar_one()
    rows = conn.execute(sa.select(sa.func.count()).select_from(FLOWS)).scalar_one()
    return int(batches), int(rows)

"""Flow batches from agents: stored once per (agent, batch id), queried by workload, address,
port, verdict and time.

A batch is one row: its records as a JSON array plus the columns that narrow a query down to the
batches worth opening (workload, time range, how many were blocked or would-block). Ingest is one
INSERT per batch whatever its size, which is what makes 1,000-record batches cheap on both
dialects; a query filters batches in SQL and records in Python, streaming. A batch id seen again
is skipped by the unique key (INSERT ... ON CONFLICT DO NOTHING), so a retrying agent never
doubles a flow. Record ids are `seq * SPAN + index`, stable and increasing, for paging.

What it deliberately does not do: analytics (maps, recommendations); those read these batches
into a columnar engine.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from microseg.store import database, schema

BATCHES = schema.flow_batches
DEFAULTS = {
    "dport": None,
    "process": None,
    "user": None,
    "bytes": 0,
    "packets": 0,
    "connections": 0,
    "rule": None,
}
"""What a record means when it leaves a field out."""
SPAN = 1_000_000
"""Record ids per batch (a batch holds fewer records than this)."""


@dataclass(frozen=True)
class Batch:
    """One batch as stored: who sent it, its JSON text (a records array, or an object holding one
    under `records`), and the columns queries use."""

    agent_id: str
    batch_id: str
    workload: str
    data: str
    records: int
    first_seen: float
    last_seen: float
    blocked: int
    would_block: int

    @staticmethod
    def of(agent_id: str, batch_id: str, workload: str, records: list[dict[str, Any]]) -> Batch:
        """A batch of record dicts."""
        verdicts = [r["verdict"] for r in records]
        first = min((r["first_seen"] for r in records), default=0.0)
        last = max((r["last_seen"] for r in records), default=0.0)
        blocked, would_block = verdicts.count("blocked"), verdicts.count("would-block")
        return Batch(
            agent_id, batch_id, workload, json.dumps(records), len(records), first, last, blocked, would_block
        )


def store_batch(db: database.Database, conn: sa.Connection, batch: Batch) -> bool:
    """Store a batch; False when this agent's batch id was stored before (nothing is written)."""
    row = {**batch.__dict__, "received_at": time.time()}
    stmt = db.insert_ignoring_duplicates(BATCHES).values(**row).returning(BATCHES.c.seq)
    return conn.execute(stmt).first() is not None  # rowcount is not reliable here on every driver


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

    def matches(self, r: dict[str, Any]) -> bool:
        """Whether one record passes the record-level filters."""
        return (
            (self.address is None or self.address in (r["src"], r["dst"]))
            and (self.port is None or r["dport"] == self.port)
            and (self.verdict is None or r["verdict"] == self.verdict)
            and (self.since is None or r["last_seen"] >= self.since)
            and (self.until is None or r["last_seen"] < self.until)
        )


def _batches(q: FlowQuery) -> sa.Select[Any]:
    stmt = sa.select(BATCHES.c.seq, BATCHES.c.workload, BATCHES.c.data).where(
        BATCHES.c.seq >= q.after_id // SPAN
    )
    if q.workload is not None:
        stmt = stmt.where(BATCHES.c.workload == q.workload)
    if q.since is not None:
        stmt = stmt.where(BATCHES.c.last_seen >= q.since)
    if q.until is not None:
        stmt = stmt.where(BATCHES.c.first_seen < q.until)
    if q.verdict == "blocked":
        stmt = stmt.where(BATCHES.c.blocked > 0)
    elif q.verdict == "would-block":
        stmt = stmt.where(BATCHES.c.would_block > 0)
    return stmt.order_by(BATCHES.c.seq)


def query(conn: sa.Connection, q: FlowQuery) -> list[dict[str, Any]]:
    """Records matching every filter, by id (oldest first), at most `limit`, ids above `after_id`."""
    found: list[dict[str, Any]] = []
    result = conn.execute(_batches(q).execution_options(yield_per=20))
    try:
        for seq, workload, data in result:
            for index, record in enumerate(_records(data)):
                ident = seq * SPAN + index
                if ident > q.after_id and q.matches(record):
                    found.append({"id": ident, "workload": workload, **record})
                    if len(found) >= q.limit:
                        return found
    finally:
        result.close()  # a streaming (server-side) cursor must be closed when we stop early
    return found


def _records(data: str) -> list[dict[str, Any]]:
    found = json.loads(data)
    items: list[dict[str, Any]] = found["records"] if isinstance(found, dict) else found
    return [{**DEFAULTS, **r} for r in items]


def counts(conn: sa.Connection) -> tuple[int, int]:
    """(batches, flow records) stored."""
    row = conn.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(BATCHES.c.records), 0))).one()
    return int(row[0]), int(row[1])

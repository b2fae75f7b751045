"""SIEM streaming's durable state and reads: a cursor per sink and source, a lease per sink, and
the sources read in id order (events, audit records, flow records).

Fed by the tables the rest of the server writes (events, audit, flow batches); feeds the
streamer (`microseg.server.streaming`), which formats and sends. A cursor is the id of the last
item a sink has (for flows the record id `seq * SPAN + index`), so a restarted server resumes
where it stopped. Ids commit in order on SQLite (writers are serialized), but not on PostgreSQL:
a transaction may commit id 10 after another committed id 11. `read` therefore holds back the
rows behind a gap until they are `settle` seconds old; a gap still open by then is taken to be a
rolled-back or skipped id (flow batch retries skip sequence values).

What it deliberately does not do: format, send or retry; that is the streamer's job.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from microseg.store import database, flows, schema

CURSORS = schema.stream_cursors
LEASES = schema.stream_leases
SOURCES = ("events", "audit", "flows")
"""What can be streamed, in the order a streamer visits them."""
VERDICTS = ("allowed", "blocked", "would-block")
BATCH_HEADERS = 1000
"""Flow batch rows one read looks at (only their counts; records are parsed only where they match)."""

_BY_ID = {"events": schema.events, "audit": schema.audit}
B = flows.BATCHES


@dataclass(frozen=True)
class Cursor:
    """Where a sink stands in one source: the last delivered id and its row's time."""

    position: int
    at: float


@dataclass(frozen=True)
class Page:
    """Rows after a cursor, and where the cursor may move once they are delivered (past flow
    batches that hold nothing to send, too). `full`: more rows may be waiting."""

    rows: list[dict[str, Any]]
    position: int
    at: float
    full: bool


@dataclass(frozen=True)
class Skip:
    """How to catch up a sink that fell more than its bound behind: move to `position`, which
    leaves out `skipped` items with ids from `first` to `position`."""

    position: int
    skipped: int
    first: int


# -- cursors and leases ------------------------------------------------------------------------------


def cursor(conn: sa.Connection, sink: str, source: str) -> Cursor | None:
    """The sink's cursor in `source`, or None when it never streamed it."""
    stmt = sa.select(CURSORS.c.position, CURSORS.c.at).where(
        CURSORS.c.sink == sink, CURSORS.c.source == source
    )
    row = conn.execute(stmt).first()
    return None if row is None else Cursor(int(row.position), float(row.at))


def save(conn: sa.Connection, sink: str, source: str, where: Cursor, now: float) -> None:
    """Move (or create) the sink's cursor in `source`."""
    values = {"position": where.position, "at": where.at, "updated_at": now}
    match = (CURSORS.c.sink == sink) & (CURSORS.c.source == source)
    if conn.execute(sa.update(CURSORS).where(match).values(**values)).rowcount == 0:
        conn.execute(sa.insert(CURSORS).values(sink=sink, source=source, **values))


def take_lease(
    db: database.Database, conn: sa.Connection, sink: str, holder: str, *, now: float, ttl: float
) -> bool:
    """Hold (or keep holding) the sink for `ttl` seconds; False while another holder's lease runs.

    One conditional UPDATE decides: on PostgreSQL a second replica waits for the row lock and then
    re-checks the condition against the winner's row, so two can never both succeed."""
    conn.execute(db.insert_ignoring_duplicates(LEASES).values(sink=sink, holder="", expires_at=0.0))
    free = (LEASES.c.holder == holder) | (LEASES.c.expires_at < now)
    stmt = sa.update(LEASES).where(LEASES.c.sink == sink, free).values(holder=holder, expires_at=now + ttl)
    return conn.execute(stmt).rowcount == 1


def renew_lease(conn: sa.Connection, sink: str, holder: str, now: float, ttl: float) -> bool:
    """Extend a lease this holder still has; False when it ran out or someone else took it."""
    held = (LEASES.c.sink == sink) & (LEASES.c.holder == holder) & (LEASES.c.expires_at >= now)
    return conn.execute(sa.update(LEASES).where(held).values(expires_at=now + ttl)).rowcount == 1


def release_lease(conn: sa.Connection, sink: str, holder: str) -> None:
    """Give the sink up at once (a stopping server), so another process need not wait out the lease."""
    mine = (LEASES.c.sink == sink) & (LEASES.c.holder == holder)
    conn.execute(sa.update(LEASES).where(mine).values(expires_at=0.0))


# -- reading the sources -----------------------------------------------------------------------------


def head(conn: sa.Connection, source: str) -> Cursor:
    """A cursor past everything stored now (where a sink that starts "now" begins)."""
    if source == "flows":
        row = conn.execute(sa.select(B.c.seq, B.c.received_at).order_by(B.c.seq.desc()).limit(1)).first()
        return Cursor(0, 0.0) if row is None else Cursor(_batch_end(int(row.seq)), float(row.received_at))
    table = _BY_ID[source]
    row = conn.execute(sa.select(table.c.id, table.c.at).order_by(table.c.id.desc()).limit(1)).first()
    return Cursor(0, 0.0) if row is None else Cursor(int(row.id), float(row.at))


def read(
    conn: sa.Connection,
    source: str,
    after: Cursor,
    *,
    limit: int,
    verdicts: frozenset[str] | None = None,
    settle_before: float | None = None,
) -> Page:
    """Up to `limit` rows after the cursor, oldest first; flows only with one of `verdicts` (None:
    all). Rows behind an id gap written after `settle_before` are held back (None: ids commit in
    order, as on SQLite)."""
    if source == "flows":
        return _read_flows(conn, after, limit, verdicts, settle_before)
    table = _BY_ID[source]
    rows = [
        r._asdict()
        for r in conn.execute(
            sa.select(table).where(table.c.id > after.position).order_by(table.c.id).limit(limit)
        )
    ]
    rows = rows[: _settled([(r["id"], r["at"]) for r in rows], after.position, settle_before)]
    if not rows:
        return Page([], after.position, after.at, False)
    return Page(rows, rows[-1]["id"], rows[-1]["at"], len(rows) == limit)


def _settled(keys: Sequence[tuple[int, float]], last: int, settle_before: float | None) -> int:
    """How many leading rows are safe to deliver: all up to the first gap that is still young."""
    for index, (key, at) in enumerate(keys):
        if key > last + 1 and settle_before is not None and at > settle_before:
            return index
        last = key
    return len(keys)


def _read_flows(
    conn: sa.Connection,
    after: Cursor,
    limit: int,
    verdicts: frozenset[str] | None,
    settle_before: float | None,
) -> Page:
    first = after.position // flows.SPAN
    headers = conn.execute(
        sa.select(B.c.seq, B.c.received_at).where(B.c.seq >= first).order_by(B.c.seq).limit(BATCH_HEADERS)
    ).all()
    safe = headers[: _settled([(int(h.seq), float(h.received_at)) for h in headers], first, settle_before)]
    if not safe:
        return Page([], after.position, after.at, False)
    found: list[dict[str, Any]] = []
    in_range = B.c.seq.between(safe[0].seq, safe[-1].seq)
    stmt = sa.select(B.c.seq, B.c.workload, B.c.received_at, B.c.data).where(in_range, weight(verdicts) > 0)
    stmt = stmt.order_by(B.c.seq)
    result = conn.execute(stmt.execution_options(yield_per=20))
    try:
        for seq, workload, received_at, data in result:
            for index, record in enumerate(_records(data)):
                ident = seq * flows.SPAN + index
                if ident > after.position and (verdicts is None or record["verdict"] in verdicts):
                    found.append({"id": ident, "at": received_at, "workload": workload, **record})
                    if len(found) == limit:
                        return Page(found, ident, received_at, True)
    finally:
        result.close()  # a streaming (server-side) cursor must be closed when we stop early
    last = safe[-1]
    more = len(headers) == BATCH_HEADERS and len(safe) == len(headers)
    return Page(found, max(after.position, _batch_end(int(last.seq))), float(last.received_at), more)


def _records(data: str) -> list[dict[str, Any]]:
    found = json.loads(data)
    items: list[dict[str, Any]] = found["records"] if isinstance(found, dict) else found
    return [{**flows.DEFAULTS, **r} for r in items]


def _batch_end(seq: int) -> int:
    return seq * flows.SPAN + flows.SPAN - 1


def weight(verdicts: frozenset[str] | None) -> sa.ColumnElement[int]:
    """How many records of a batch have one of `verdicts`, from its count columns."""
    if verdicts is None:
        return B.c.records
    parts = {
        "blocked": B.c.blocked,
        "would-block": B.c.would_block,
        "allowed": B.c.records - B.c.blocked - B.c.would_block,
    }
    total: sa.ColumnElement[int] = sa.literal(0)
    for verdict in sorted(verdicts):
        total = total + parts[verdict]
    return total


def rewound(conn: sa.Connection, source: str, where: Cursor) -> Cursor | None:
    """A corrected cursor when the source's ids restarted below it, else None.

    SQLite reuses rowids once the newest rows are gone, so when retention drops every flow batch,
    new batches start again at seq 1, under the cursor. The batches received after the cursor's
    time are the new ones."""
    if source != "flows" or where.position == 0:
        return None
    newest = conn.execute(sa.select(sa.func.max(B.c.seq))).scalar_one_or_none()
    if newest is not None and _batch_end(int(newest)) >= where.position:
        return None
    older = conn.execute(
        sa.select(sa.func.max(B.c.seq)).where(B.c.received_at <= where.at)
    ).scalar_one_or_none()
    return Cursor(0 if older is None else _batch_end(int(older)), where.at)


def backlog(
    conn: sa.Connection, source: str, after: Cursor, bound: int, verdicts: frozenset[str] | None = None
) -> Skip | None:
    """None when at most `bound` items wait after the cursor; otherwise how to skip the oldest so
    that the newest `bound` (about, for flows: whole batches) remain. Reads at most bound+1 rows."""
    if source == "flows":
        return _flow_backlog(conn, after, bound, verdicts)
    table = _BY_ID[source]
    newest = conn.execute(sa.select(sa.func.max(table.c.id))).scalar_one_or_none() or 0
    if newest - after.position <= bound:  # ids never outnumber rows: no scan needed
        return None
    ids = (
        conn.execute(
            sa.select(table.c.id)
            .where(table.c.id > after.position)
            .order_by(table.c.id.desc())
            .limit(bound + 1)
        )
        .scalars()
        .all()
    )
    if len(ids) <= bound:
        return None
    cut = int(ids[bound])
    skipped_rows = (table.c.id > after.position) & (table.c.id <= cut)
    skipped, first = conn.execute(
        sa.select(sa.func.count(), sa.func.min(table.c.id)).where(skipped_rows)
    ).one()
    return Skip(cut, int(skipped), int(first))


def _flow_backlog(
    conn: sa.Connection, after: Cursor, bound: int, verdicts: frozenset[str] | None
) -> Skip | None:
    start, w = after.position // flows.SPAN, weight(verdicts)
    rows = conn.execute(
        sa.select(B.c.seq, w).where(B.c.seq > start, w > 0).order_by(B.c.seq.desc()).limit(bound + 1)
    ).all()
    total = 0
    for seq, count in rows:
        total += int(count)
        if total > bound:
            cut = int(seq)
            break
    else:
        return None
    skipped_rows = (B.c.seq > start) & (B.c.seq <= cut)
    skipped, first = conn.execute(
        sa.select(sa.func.coalesce(sa.func.sum(w), 0), sa.func.min(B.c.seq)).where(skipped_rows)
    ).one()
    return Skip(_batch_end(cut), int(skipped), int(first) * flows.SPAN)

"""Flow summaries: agents' flow records summed per hour bucket and summary key.

Fed by the agent flow ingest (`add_batch`, in the transaction that stored a new batch, so a batch
sent twice is counted once); feeds `GET /flows/summary`, the CLI's `microseg flows` and the
analytics (map, recommend, simulate), which read a time window with `query` / `iterate`.

The summary key is (hour bucket, reporter, direction, src, dst, dport, proto, process, verdict,
rule): one row per key, whose connections, bytes and packets add up and whose first/last seen
widen with every batch. A batch is folded in Python first (so one statement never touches a row
twice, which PostgreSQL refuses) and then upserted with one INSERT ... ON CONFLICT DO UPDATE.
Both ends of a connection between managed workloads report it; the rows keep `reporter` and
`direction` so that readers can tell the two reports apart (this module does not merge them).

What it deliberately does not do: resolve addresses to workloads or match labels. Labels change,
so the caller resolves at query time with the active engine and passes a `keep` predicate.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from microseg.store import database, flows, schema

T = schema.flow_summaries
BUCKET = 3600.0
"""Seconds per time bucket (an hour)."""
RETENTION_DAYS = 30
"""Days flow summaries and raw batches are kept unless the server setting says otherwise."""
KEY = ("bucket", "reporter", "direction", "src", "dst", "dport", "proto", "process", "verdict", "rule")
SUMS = ("connections", "bytes", "packets")
NO_PORT, NO_TEXT = -1, ""
"""What the NOT NULL key columns hold for "none" (a unique key never matches NULLs)."""

Row = dict[str, Any]


def bucket_of(when: float) -> float:
    """The start of the hour `when` falls in (epoch seconds)."""
    return math.floor(when / BUCKET) * BUCKET


# -- ingest ---------------------------------------------------------------------------------------


def fold(reporter: str, records: Iterable[Mapping[str, Any]]) -> list[Row]:
    """Records summed per summary key, as table rows (one per key). A record is bucketed by its
    first_seen: the hour its connections started in."""
    rows: dict[tuple[Any, ...], Row] = {}
    for raw in records:
        r = {**flows.DEFAULTS, **raw}
        key = (bucket_of(r["first_seen"]), reporter, r["direction"], r["src"], r["dst"],
               NO_PORT if r["dport"] is None else r["dport"], r["proto"], r["process"] or NO_TEXT,
               r["verdict"], r["rule"] or NO_TEXT)  # fmt: skip
        row = rows.get(key)
        if row is None:
            rows[key] = {**dict(zip(KEY, key, strict=True)), "first_seen": r["first_seen"],
                         "last_seen": r["last_seen"], **{s: r[s] for s in SUMS}}  # fmt: skip
            continue
        row["first_seen"] = min(row["first_seen"], r["first_seen"])
        row["last_seen"] = max(row["last_seen"], r["last_seen"])
        for s in SUMS:
            row[s] += r[s]
    return list(rows.values())


def _upsert(db: database.Database) -> Any:
    """INSERT ... ON CONFLICT (key) DO UPDATE adding the sums and widening first/last seen."""
    stmt = (sqlite if db.is_sqlite else postgresql).insert(T)
    new = stmt.excluded
    widened = {
        "first_seen": sa.case((new.first_seen < T.c.first_seen, new.first_seen), else_=T.c.first_seen),
        "last_seen": sa.case((new.last_seen > T.c.last_seen, new.last_seen), else_=T.c.last_seen),
    }
    added = {s: T.c[s] + new[s] for s in SUMS}
    return stmt.on_conflict_do_update(index_elements=list(KEY), set_={**widened, **added})


def add_batch(
    db: database.Database, conn: sa.Connection, reporter: str, records: Iterable[Mapping[str, Any]]
) -> int:
    """Fold a newly stored batch into the summaries; the number of summary rows it touched."""
    rows = fold(reporter, records)
    if rows:
        conn.execute(_upsert(db), rows)  # one statement, executed for each folded row
    return len(rows)


# -- queries --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """What a summary query keeps; None means "any". The window keeps rows that overlap
    [since, until): last seen at or after `since`, first seen before `until`."""

    since: float | None = None
    until: float | None = None
    port: int | None = None
    proto: str | None = None
    verdict: str | None = None
    process: str | None = None
    """A glob (`*`, `?`, `[...]`) on the process name or path, case-sensitive."""
    reporter: str | None = None
    keep: Callable[[Row], bool] | None = None
    """A last test on each row in the agreed shape (the caller's label and workload filters)."""

    def select(self, after: int = 0) -> sa.Select[Any]:
        """The SQL part: everything but the process glob and `keep`, by id above `after`."""
        stmt = sa.select(*_COLUMNS).where(T.c.id > after)
        for column, value in (("dport", self.port), ("proto", self.proto), ("verdict", self.verdict),
                              ("reporter", self.reporter)):  # fmt: skip
            if value is not None:
                stmt = stmt.where(T.c[column] == value)
        if self.since is not None:
            stmt = stmt.where(T.c.last_seen >= self.since)
        if self.until is not None:
            stmt = stmt.where(T.c.first_seen < self.until)
        return stmt.order_by(T.c.id)

    def matches(self, row: Row) -> bool:
        """The Python part: the process glob, then `keep`."""
        if self.process is not None and not (
            row["process"] is not None and fnmatch.fnmatchcase(row["process"], self.process)
        ):
            return False
        return self.keep is None or self.keep(row)


_COLUMNS = tuple(T.c[name] for name in ("id", *KEY, "first_seen", "last_seen", *SUMS))
"""What `Filters.select` reads, in the order `shaped` unpacks (by position: analytics read a
hundred thousand rows, and a lookup by name per field was most of the cost of shaping them)."""


def shaped(stored: sa.Row[Any]) -> Row:
    """A row selected by `Filters.select` in the agreed summary shape (None back in place of the
    -1 / '' markers)."""
    (_, bucket, reporter, direction, src, dst, dport, proto, process, verdict, rule,
     first_seen, last_seen, connections, sent, packets) = tuple(stored)  # fmt: skip
    return {
        "bucket": bucket, "reporter": reporter, "direction": direction, "src": src, "dst": dst,
        "dport": None if dport == NO_PORT else dport, "proto": proto, "process": process or None,
        "verdict": verdict, "rule": rule or None, "firstSeen": first_seen, "lastSeen": last_seen,
        "connections": connections, "bytes": sent, "packets": packets,
    }  # fmt: skip


def _scan(conn: sa.Connection, filters: Filters, after: int) -> Iterator[tuple[int, Row]]:
    """(id, row) of every matching row, by id, streamed from the database."""
    result = conn.execute(filters.select(after).execution_options(yield_per=500))
    try:
        for stored in result:
            row = shaped(stored)
            if filters.matches(row):
                yield stored.id, row
    finally:
        result.close()  # a streaming (server-side) cursor must be closed when we stop early


def iterate(conn: sa.Connection, filters: Filters | None = None) -> Iterator[Row]:
    """Every matching row, oldest id first, streamed (for analytics over a time window)."""
    for _, row in _scan(conn, filters or Filters(), 0):
        yield row


def query(
    conn: sa.Connection,
    since: float | None = None,
    until: float | None = None,
    filters: Filters | None = None,
) -> list[Row]:
    """Every row in the window [since, until) (when given, else the filters' own) that passes
    `filters`, without a limit."""
    base = filters or Filters()
    window = dataclasses.replace(
        base, since=base.since if since is None else since, until=base.until if until is None else until
    )
    return list(iterate(conn, window))


def page(
    conn: sa.Connection, filters: Filters, after: int = 0, limit: int = 100
) -> tuple[list[Row], int | None]:
    """At most `limit` rows with ids above `after`, and the `after` of the next page (None at the
    end). Rows keep their id when later batches add to them, so paging never repeats a row."""
    found: list[Row] = []
    last = after
    for ident, row in _scan(conn, filters, after):
        if len(found) == limit:
            return found, last  # one more matched: there is a next page
        found.append(row)
        last = ident
    return found, None


def counts(conn: sa.Connection) -> int:
    """Summary rows stored."""
    return int(conn.execute(sa.select(sa.func.count()).select_from(T)).scalar_one())


# -- retention ------------------------------------------------------------------------------------


def expire(conn: sa.Connection, before: float, beyond: float | None = None) -> tuple[int, int]:
    """Drop summaries and raw flow batches last seen before `before`, or (when given) after
    `beyond`; (summaries, batches) dropped.

    A raw batch is dropped with its summaries so that the two never disagree about what is kept;
    a batch id resent after that is stored (and counted) again, as new. `beyond` is for rows from
    the future, which ingest refuses now but a server before that check stored: dated near 2**40,
    they would otherwise never expire."""
    summaries = conn.execute(sa.delete(T).where(_outside(T, before, beyond))).rowcount
    batches = conn.execute(sa.delete(flows.BATCHES).where(_outside(flows.BATCHES, before, beyond))).rowcount
    return int(summaries), int(batches)


def _outside(table: sa.Table, before: float, beyond: float | None) -> sa.ColumnElement[bool]:
    old = table.c.last_seen < before
    return old if beyond is None else sa.or_(old, table.c.last_seen > beyond)


@dataclass(frozen=True)
class Purge:
    """Which flow data an admin drops: one reporter's (a workload name), a window, or both. The
    window takes what overlaps [since, until): last seen at or after `since`, first seen (for
    counters: the hour) before `until`; a raw batch that overlaps goes whole."""

    reporter: str | None = None
    since: float | None = None
    until: float | None = None

    def where(self, table: sa.Table, reporter: str, first: str = "first_seen",
              last: str = "last_seen") -> sa.ColumnElement[bool]:  # fmt: skip
        """The rows of `table` this purge takes (its reporter, first and last seen columns)."""
        found: list[sa.ColumnElement[bool]] = []
        if self.reporter is not None:
            found.append(table.c[reporter] == self.reporter)
        if self.since is not None:
            found.append(table.c[last] >= self.since)
        if self.until is not None:
            found.append(table.c[first] < self.until)
        return sa.and_(sa.true(), *found)


def purge(conn: sa.Connection, what: Purge) -> dict[str, int]:
    """Drop the flow data `what` names: summaries, raw batches and the reporter's rule-counter
    hours (counters come from the same agent; a poisoned agent poisons both). Rows dropped per
    table: {summaries, batches, counterHours}."""
    hours = schema.rule_counter_hours
    dropped = {
        "summaries": conn.execute(sa.delete(T).where(what.where(T, "reporter"))),
        "batches": conn.execute(sa.delete(flows.BATCHES).where(what.where(flows.BATCHES, "workload"))),
        "counterHours": conn.execute(
            sa.delete(hours).where(what.where(hours, "workload", first="bucket", last="last_hit"))
        ),
    }  # fmt: skip
    return {name: int(result.rowcount) for name, result in dropped.items()}

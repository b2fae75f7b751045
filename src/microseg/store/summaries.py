"""Flow summaries: agents' flow records summed per hour bucket and summary key.

Fed by the agent flow ingest (`add_batch`, in the transaction that stored a new batch, so a batch
sent twice is counted once); feeds `GET /flows/summary`, the CLI's `microseg flows` and the
analytics (map, recommend, simulate, rule hits), which read a time window as plain value rows
with `records` (`query` / `iterate` give dicts, for the API and the CLI).

The summary key is (hour bucket, reporter, direction, src, dst, dport, proto, process, verdict,
rule): one row per key, whose connections, bytes and packets add up and whose first/last seen
widen with every batch. A batch is folded in Python first (so one statement never touches a row
twice, which PostgreSQL refuses; the ingest folds before its write transaction) and then upserted
with one INSERT ... ON CONFLICT DO UPDATE: on PostgreSQL one statement over the whole batch, sent
as one JSON array, on SQLite one executemany.
Both ends of a connection between managed workloads report it; the rows keep `reporter` and
`direction` so that readers can tell the two reports apart (this module does not merge them).

What it deliberately does not do: resolve addresses to workloads or match labels. Labels change,
so the caller resolves at query time with the active engine and passes a `keep` predicate.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import sqlalchemy as sa

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


class Key(NamedTuple):
    """One summary row's identity: the table's unique key, with -1 / '' for "none"."""

    bucket: float
    reporter: str
    direction: str
    src: str
    dst: str
    dport: int
    proto: str
    process: str
    verdict: str
    rule: str


@dataclass(slots=True)
class Totals:
    """What the records of one key add up to: the widest first/last seen and the sums."""

    first_seen: float
    last_seen: float
    connections: int
    bytes: int
    packets: int

    def add(self, first_seen: float, last_seen: float, connections: int, sent: int, packets: int) -> None:
        """Widen the times and add the sums of one more record (or of a row: the same arithmetic)."""
        self.first_seen = min(self.first_seen, first_seen)
        self.last_seen = max(self.last_seen, last_seen)
        self.connections += connections
        self.bytes += sent
        self.packets += packets


Folded = dict[Key, Totals]
"""A batch summed per key, in the order its keys first appear."""


def fold(reporter: str, records: Iterable[Mapping[str, Any]]) -> Folded:
    """Records summed per summary key (one entry per key). A record is bucketed by its first_seen:
    the hour its connections started in. Cost: one dict lookup per record."""
    folded: Folded = {}
    for r in records:
        first, last = r["first_seen"], r["last_seen"]
        port, process, rule = r.get("dport"), r.get("process"), r.get("rule")
        key = Key(
            bucket_of(first),
            reporter,
            r["direction"],
            r["src"],
            r["dst"],
            NO_PORT if port is None else port,
            r["proto"],
            process or NO_TEXT,
            r["verdict"],
            rule or NO_TEXT,
        )
        connections, sent, packets = r.get("connections", 0), r.get("bytes", 0), r.get("packets", 0)
        totals = folded.get(key)
        if totals is None:
            folded[key] = Totals(first, last, connections, sent, packets)
        else:
            totals.add(first, last, connections, sent, packets)
    return folded


COLUMNS = (*KEY, "first_seen", "last_seen", *SUMS)
"""The columns one folded row fills, in the order `_values` lists them."""


SUM_MAX = 2**63 - 1
"""Sums saturate here: the columns are 64-bit, and a reporter may send records up to 2**62 each
(PostgreSQL would refuse the overflow with an error, SQLite would turn the sum into a float)."""


def _values(folded: Folded) -> list[tuple[Any, ...]]:
    return [
        (*key, t.first_seen, t.last_seen, *(min(n, SUM_MAX) for n in (t.connections, t.bytes, t.packets)))
        for key, t in folded.items()
    ]


@functools.lru_cache(maxsize=8)  # per engine's dialect: in practice one
def _upsert_sql(dialect: sa.Dialect) -> str:
    """INSERT ... ON CONFLICT (key) DO UPDATE adding the sums and widening first/last seen, in the
    driver's own SQL. SQLite takes one parameter set per row (executemany binds them in C);
    PostgreSQL takes the whole batch as one JSON array of rows, so a batch is one statement and one
    round trip (psycopg's array parameters cost more to encode, in Python, than the upsert)."""
    quote = dialect.identifier_preparer.quote
    table, key = quote(T.name), ", ".join(quote(c) for c in KEY)
    least, greatest = ("min", "max") if dialect.name == "sqlite" else ("LEAST", "GREATEST")
    first, last = quote("first_seen"), quote("last_seen")
    updated = [
        f"{first} = {least}({table}.{first}, excluded.{first})",
        f"{last} = {greatest}({table}.{last}, excluded.{last})",
        *(f"{quote(s)} = {_saturating(table, quote(s))}" for s in SUMS),
    ]
    if dialect.name == "sqlite":
        rows = f"VALUES ({', '.join('?' for _ in COLUMNS)})"
    else:
        cells = ", ".join(f"(row->>{i})::{_PG_TYPES.get(c, 'text')}" for i, c in enumerate(COLUMNS))
        rows = f"SELECT {cells} FROM jsonb_array_elements(%s::jsonb) AS row"
    return (
        f"INSERT INTO {table} ({', '.join(quote(c) for c in COLUMNS)}) {rows} "
        f"ON CONFLICT ({key}) DO UPDATE SET {', '.join(updated)}"
    )


def _saturating(table: str, column: str) -> str:
    """stored + added, at most SUM_MAX, never computing an overflowing sum (both are >= 0)."""
    stored, added = f"{table}.{column}", f"excluded.{column}"
    return f"CASE WHEN {stored} > {SUM_MAX} - {added} THEN {SUM_MAX} ELSE {stored} + {added} END"


_PG_TYPES = {
    "bucket": "float8",
    "dport": "int4",
    "first_seen": "float8",
    "last_seen": "float8",
    **dict.fromkeys(SUMS, "int8"),
}
"""The type of each column that is not text on PostgreSQL (JSON numbers cast back exactly: Python
writes the shortest text that reads back as the same double)."""


def write(conn: sa.Connection, folded: Folded) -> None:
    """Upsert folded rows: new keys are inserted (ids in the order keys first appeared), existing
    ones grow. Keys must be distinct (a fold's are), since PostgreSQL refuses a statement that
    touches one row twice."""
    if not folded:
        return
    sql, rows = _upsert_sql(conn.dialect), _values(folded)
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(sql, rows)
    else:
        conn.exec_driver_sql(sql, (json.dumps(rows),))


def add_batch(
    db: database.Database, conn: sa.Connection, reporter: str, records: Iterable[Mapping[str, Any]]
) -> int:
    """Fold a newly stored batch into the summaries; the number of summary rows it touched. Cost: a
    pass over the records, then one statement (PostgreSQL) or one executemany (SQLite)."""
    folded = fold(reporter, records)
    write(conn, folded)
    return len(folded)


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
        for column, value in (
            ("dport", self.port),
            ("proto", self.proto),
            ("verdict", self.verdict),
            ("reporter", self.reporter),
        ):
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
    (
        _,
        bucket,
        reporter,
        direction,
        src,
        dst,
        dport,
        proto,
        process,
        verdict,
        rule,
        first_seen,
        last_seen,
        connections,
        sent,
        packets,
    ) = tuple(stored)
    return {
        "bucket": bucket,
        "reporter": reporter,
        "direction": direction,
        "src": src,
        "dst": dst,
        "dport": None if dport == NO_PORT else dport,
        "proto": proto,
        "process": process or None,
        "verdict": verdict,
        "rule": rule or None,
        "firstSeen": first_seen,
        "lastSeen": last_seen,
        "connections": connections,
        "bytes": sent,
        "packets": packets,
    }


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


RECORD_COLUMNS = (*KEY, "firstSeen", "lastSeen", *SUMS, "rows")
"""What each value of a `records` row is, in order: the agreed shape's keys, then how many stored
rows were folded into it."""
_FOLD_KEY = KEY[1:]
"""A summary key without its hour: what `records` folds a window by."""
_INF = float("inf")


def records(
    conn: sa.Connection, since: float | None = None, until: float | None = None
) -> list[Sequence[Any]]:
    """The window [since, until) folded across its hours, as plain rows of values in
    `RECORD_COLUMNS` order: the analytics' bulk read.

    One row per summary key without its hour (reporter, direction, src, dst, dport, proto, process,
    verdict, rule; NULL in place of the -1 / '' markers): first seen the earliest, last seen the
    latest, the sums added (at most SUM_MAX; on SQLite added as doubles, so exact up to 2**53), and
    `rows` the stored rows folded in. Every row's bucket is the window's own (the hour `since` falls
    in, 0.0 without one): the analytics answer for the window, and the two ends' reports of one
    connection meet in it whatever hours each end saw it in.

    Stored rows whose times or counts do not check out (first seen after last seen, infinite, a
    negative count: what a server before ingest checked them could store) are folded apart, into
    rows whose firstSeen is NULL, so that the analytics skip them and count their `rows`; folded
    with good ones they would pass unseen. Addresses and the other key fields are checked by the
    analytics (every row of a fold shares them). Rows come in no particular order.

    Cost: one grouped query; the rows that cross into Python are the window's distinct keys, not
    its hours (in bench/bench_analytics.py a day's million stored rows fold into 182,268, and
    reading the million unfolded had taken longer than the map's whole target)."""
    window = (
        Filters(since=since, until=until)
        .select()
        .with_only_columns(
            *(T.c[k] for k in _FOLD_KEY),
            T.c.first_seen,
            T.c.last_seen,
            *(T.c[s] for s in SUMS),
            sa.case((_good(), 1), else_=0).label("good"),
        )
        .order_by(None)
        .subquery()
    )
    good = window.c.good == 1
    bucket = 0.0 if since is None else bucket_of(since)
    stmt = sa.select(
        sa.literal(bucket, sa.Float),
        *(window.c[k] for k in ("reporter", "direction", "src", "dst")),
        sa.func.nullif(window.c.dport, NO_PORT),
        window.c.proto,
        sa.func.nullif(window.c.process, NO_TEXT),
        window.c.verdict,
        sa.func.nullif(window.c.rule, NO_TEXT),
        sa.case((good, sa.func.min(window.c.first_seen))),
        sa.func.max(window.c.last_seen),
        *(_sum(conn.dialect, window.c[s]) for s in SUMS),
        sa.func.count(),
    ).group_by(*(window.c[k] for k in _FOLD_KEY), window.c.good)
    return list(conn.execute(stmt).all())


def _good() -> sa.ColumnElement[bool]:
    """A stored row whose times and counts check out (NaN, on PostgreSQL, fails the comparisons)."""
    return sa.and_(
        T.c.first_seen > -_INF,
        T.c.first_seen <= T.c.last_seen,
        T.c.last_seen < _INF,
        *(T.c[s] >= 0 for s in SUMS),
    )


def _sum(dialect: sa.Dialect, column: sa.ColumnElement[Any]) -> sa.ColumnElement[int]:
    """The column added up, at most SUM_MAX and never an error: SQLite's integer sum() raises on
    overflow (a 5xx for whoever asked), so it adds doubles, which CAST saturates at the largest
    integer; PostgreSQL adds bigints as numeric."""
    if dialect.name == "sqlite":
        return sa.cast(sa.func.total(column), sa.BigInteger)
    return sa.cast(sa.func.least(sa.func.sum(column), SUM_MAX), sa.BigInteger)


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

    def where(
        self, table: sa.Table, reporter: str, first: str = "first_seen", last: str = "last_seen"
    ) -> sa.ColumnElement[bool]:
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
    }
    return {name: int(result.rowcount) for name, result in dropped.items()}

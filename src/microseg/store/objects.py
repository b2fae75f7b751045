"""Named objects (policy-file documents) by kind and name, with content ETags.

The draft's policy objects and the live inventory share this one table; which kinds are draft and
which are live is the server's knowledge (`microseg.server.kinds`). The ETag is a digest of the
document, so it changes exactly when the content does.

Writing a Workload (`put`, `create`) also writes its addresses into `workload_addresses` and its
lower-case name into `workload_names` (same transaction), so who
holds an address (`address_holder`) and a name in another case (`named_in_any_case`) are indexed
reads: enrollment costs the same at 10 and at 10,000 workloads.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from microseg.store import schema

T = schema.objects
A = schema.workload_addresses
N = schema.workload_names
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


# --- statements built once: enrollment runs each at every enrollment, and a statement object
# kept keeps its memoised cache key, so it is neither rebuilt nor re-keyed per call --------------

_INSERT = sa.insert(T)
_INSERT_NAME = sa.insert(N)
_NAMED_IN_ANY_CASE = (
    sa.select(N.c.name)
    .where(N.c.folded == sa.bindparam("folded"))
    .order_by(N.c.name != sa.bindparam("name"), N.c.name)  # the name as it is first
    .limit(1)
)


def _holder_query() -> sa.Select[Any]:
    """The first host address inside [low, high] held by a workload other than `me`, else the
    first network overlapping it: two indexed reads (scalar subqueries, each with its LIMIT) in
    one round trip; COALESCE runs the second only when the first finds nothing."""
    low, high = sa.bindparam("low", type_=A.c.low.type), sa.bindparam("high", type_=A.c.high.type)
    same = sa.and_(A.c.version == sa.bindparam("version"), A.c.workload != sa.bindparam("me"))
    hosts = sa.select(A.c.workload).where(A.c.is_host.is_(True), same, A.c.low >= low, A.c.low <= high)
    networks = sa.select(A.c.workload).where(A.c.is_host.is_(False), same, A.c.low <= high, A.c.high >= low)
    first = [q.order_by(A.c.low).limit(1).scalar_subquery() for q in (hosts, networks)]
    return sa.select(sa.func.coalesce(*first))


_HOLDER = _holder_query()


@dataclass(frozen=True)
class Stored:
    """One object as stored."""

    kind: str
    name: str
    doc: dict[str, Any]
    etag: str
    updated_at: float
    updated_by: str


def etag(doc: dict[str, Any]) -> str:
    """A digest of the document's canonical JSON (what `ETag` and `If-Match` carry)."""
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _stored(row: sa.Row[Any]) -> Stored:
    return Stored(row.kind, row.name, row.doc, row.etag, row.updated_at, row.updated_by)


def get(conn: sa.Connection, kind: str, name: str) -> Stored | None:
    """The object, or None."""
    row = conn.execute(sa.select(T).where(T.c.kind == kind, T.c.name == name)).first()
    return None if row is None else _stored(row)


def of_kinds(conn: sa.Connection, kinds: Iterable[str]) -> list[Stored]:
    """Every object of these kinds, by kind then name."""
    query = sa.select(T).where(T.c.kind.in_(list(kinds))).order_by(T.c.kind, T.c.name)
    return [_stored(row) for row in conn.execute(query)]


def page(conn: sa.Connection, kind: str, after: str | None, limit: int) -> list[Stored]:
    """Up to `limit` objects of `kind` named after `after`, by name (one indexed range read, so a
    page costs the same at 10 and at 10,000 objects)."""
    query = sa.select(T).where(T.c.kind == kind)
    if after is not None:
        query = query.where(T.c.name > after)
    return [_stored(row) for row in conn.execute(query.order_by(T.c.name).limit(limit))]


def put(conn: sa.Connection, kind: str, name: str, doc: dict[str, Any], actor: str) -> Stored:
    """Create or replace."""
    stored = Stored(kind, name, doc, etag(doc), time.time(), actor)
    values = {"doc": doc, "etag": stored.etag, "updated_at": stored.updated_at, "updated_by": actor}
    done = conn.execute(sa.update(T).where(T.c.kind == kind, T.c.name == name).values(**values))
    if done.rowcount == 0:
        conn.execute(_INSERT, {"kind": kind, "name": name, **values})
    if kind == "Workload":
        _index_addresses(conn, [(name, doc)], replace=True)
        if done.rowcount == 0:
            conn.execute(_INSERT_NAME, {"folded": name.lower(), "name": name})
    return stored


def create(conn: sa.Connection, kind: str, name: str, doc: dict[str, Any], actor: str) -> Stored:
    """Create an object the caller knows is not stored (it looked, under a lock that keeps it so):
    what `put` does for a new one without its UPDATE and, for a workload, without deleting
    address rows a new name cannot have. An IntegrityError when it exists after all.

    Cost: one statement; a workload on SQLite three (the object, its addresses, its name), which
    PostgreSQL takes as one (data-modifying CTEs): enrollment creates workloads while it holds
    the `address-claims` lock, so every round trip saved there is saved for every enroller."""
    stored = Stored(kind, name, doc, etag(doc), time.time(), actor)
    values = {"doc": doc, "etag": stored.etag, "updated_at": stored.updated_at, "updated_by": actor}
    row = {"kind": kind, "name": name, **values}
    if kind != "Workload":
        conn.execute(_INSERT, row)
        return stored
    addresses, folded = address_rows(name, doc), {"folded": name.lower(), "name": name}
    if conn.dialect.name != "postgresql":
        conn.execute(_INSERT, row)
        if addresses:
            conn.execute(sa.insert(A), addresses)
        conn.execute(_INSERT_NAME, folded)
        return stored
    together = sa.insert(N).values(folded).add_cte(sa.insert(T).values(row).cte("created"))
    if addresses:
        together = together.add_cte(sa.insert(A).values(addresses).cte("addresses"))
    conn.execute(together)
    return stored


def delete(conn: sa.Connection, kind: str, name: str) -> bool:
    """Remove; whether it existed."""
    if kind == "Workload":
        conn.execute(sa.delete(A).where(A.c.workload == name))
        conn.execute(sa.delete(N).where(N.c.name == name))
    return conn.execute(sa.delete(T).where(T.c.kind == kind, T.c.name == name)).rowcount > 0


def replace_kinds(
    conn: sa.Connection, kinds: Iterable[str], items: list[tuple[str, dict[str, Any]]], actor: str
) -> None:
    """Make the objects of `kinds` exactly `items`: (stored name, document with its kind)."""
    conn.execute(sa.delete(T).where(T.c.kind.in_(list(kinds))))
    now = time.time()
    rows = [
        {"kind": d["kind"], "name": name, "doc": d, "etag": etag(d), "updated_at": now, "updated_by": actor}
        for name, d in items
    ]
    if rows:
        conn.execute(sa.insert(T), rows)
    if "Workload" in kinds:
        workloads = [(name, d) for name, d in items if d["kind"] == "Workload"]
        conn.execute(sa.delete(A))
        conn.execute(sa.delete(N))
        _index_addresses(conn, workloads, replace=False)
        if workloads:
            conn.execute(sa.insert(N), [{"folded": name.lower(), "name": name} for name, _ in workloads])


# --- lookups that stay indexed however many workloads there are ---------------------------------


def named_in_any_case(conn: sa.Connection, kind: str, name: str) -> str | None:
    """The stored name of the object of `kind` called `name` in any case (names are ASCII, so
    lower() is casefold()): `name` itself when it exists, else the first such by name. One indexed
    read for workloads (`workload_names` holds every workload's name, `name` itself too); other
    kinds are few and scanned."""
    if kind == "Workload":
        found: str | None = conn.execute(_NAMED_IN_ANY_CASE, {"folded": name.lower(), "name": name}).scalar()
        return found
    if get(conn, kind, name) is not None:
        return name
    query = sa.select(T.c.name).where(T.c.kind == kind, sa.func.lower(T.c.name) == name.lower())
    found = conn.execute(query.order_by(T.c.name).limit(1)).scalar()
    return found


def address_holder(conn: sa.Connection, net: Network, me: str) -> str | None:
    """The workload other than `me` holding an address that overlaps `net` (a host address in
    it, else a network overlapping it), if any: one statement of two indexed reads."""
    bounds = {"version": net.version, "me": me}
    low, high = _bound(net.network_address), _bound(net.broadcast_address)
    found: str | None = conn.execute(_HOLDER, {**bounds, "low": low, "high": high}).scalar()
    return found


def address_rows(name: str, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The `workload_addresses` rows of a workload document (its `spec.addresses`; a text that is
    no address is skipped: validation refused it before anything was stored)."""
    found: dict[str, dict[str, Any]] = {}
    for text in ((doc or {}).get("spec") or {}).get("addresses") or []:
        try:
            net = ipaddress.ip_network(str(text).strip(), strict=False)
        except ValueError:
            continue
        found[str(net)] = {
            "workload": name,
            "network": str(net),
            "version": net.version,
            "is_host": net.num_addresses == 1,
            "low": _bound(net.network_address),
            "high": _bound(net.broadcast_address),
        }
    return list(found.values())


def _index_addresses(conn: sa.Connection, docs: list[tuple[str, dict[str, Any]]], *, replace: bool) -> None:
    """Write the address rows of these workloads (`replace`: dropping their old rows first)."""
    if replace:
        conn.execute(sa.delete(A).where(A.c.workload.in_([name for name, _ in docs])))
    rows = [row for name, doc in docs for row in address_rows(name, doc)]
    if rows:
        conn.execute(sa.insert(A), rows)


def _bound(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    return int(address).to_bytes(16, "big")

"""Named objects (policy-file documents) by kind and name, with content ETags.

The draft's policy objects and the live inventory share this one table; which kinds are draft and
which are live is the server's knowledge (`microseg.server.kinds`). The ETag is a digest of the
document, so it changes exactly when the content does.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from microseg.store import schema

T = schema.objects


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


def put(conn: sa.Connection, kind: str, name: str, doc: dict[str, Any], actor: str) -> Stored:
    """Create or replace."""
    stored = Stored(kind, name, doc, etag(doc), time.time(), actor)
    values = {"doc": doc, "etag": stored.etag, "updated_at": stored.updated_at, "updated_by": actor}
    done = conn.execute(sa.update(T).where(T.c.kind == kind, T.c.name == name).values(**values))
    if done.rowcount == 0:
        conn.execute(sa.insert(T).values(kind=kind, name=name, **values))
    return stored


def delete(conn: sa.Connection, kind: str, name: str) -> bool:
    """Remove; whether it existed."""
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

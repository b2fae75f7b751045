"""One streamed item, whatever its source: an event, an audit record, a flow record, or the
streamer's own "items were dropped" notice.

Fed by the rows `store.streams.read` returns; feeds the formatters. Each item has a stable `uid`
(`events:12`, `audit:7`, `flows:3000002`) so that a receiver can drop the duplicates that
at-least-once delivery may bring after a crash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FLOW_FIELDS = (
    "direction",
    "src",
    "dst",
    "dport",
    "proto",
    "process",
    "user",
    "verdict",
    "rule",
    "bytes",
    "packets",
    "connections",
    "first_seen",
    "last_seen",
)
"""Flow record fields carried as they are."""


@dataclass(frozen=True)
class Item:
    """What every format needs to say about one thing that happened."""

    source: str
    """`events`, `audit`, `flows` or `stream` (the streamer's own notices)."""
    number: int
    """The id in its source (flows: `seq * SPAN + index`)."""
    at: float
    kind: str
    """Event kind, audit action, flow verdict, or `dropped`."""
    message: str
    workload: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    """Flat top-level facts (actor, target; a flow's addresses, port, rule ...)."""
    details: dict[str, Any] = field(default_factory=dict)
    """The nested rest (an event's or audit record's details)."""

    @property
    def uid(self) -> str:
        """Unique across sources: what a receiver dedupes on."""
        return f"{self.source}:{self.number}"


def of_row(source: str, row: dict[str, Any]) -> Item:
    """The item of one row of `source`."""
    if source == "events":
        return Item(
            "events",
            row["id"],
            row["at"],
            row["kind"],
            row["message"],
            row["workload"],
            details=row["details"] or {},
        )
    if source == "audit":
        message = f"{row['actor']} {row['action']} {row['target']}"
        fields = {"actor": row["actor"], "target": row["target"]}
        return Item("audit", row["id"], row["at"], row["action"], message, None, fields, row["details"] or {})
    fields = {k: row[k] for k in FLOW_FIELDS if row.get(k) is not None}
    return Item("flows", row["id"], row["at"], row["verdict"], _flow_message(row), row["workload"], fields)


def _flow_message(r: dict[str, Any]) -> str:
    by = r["rule"] or "default deny"
    return f"{r['workload']}: {r['verdict']} {r['src']} -> {r['dst']} {r['dport']}/{r['proto']} by {by}"


def dropped(sink: str, source: str, *, skipped: int, first: int, last: int, bound: int, at: float) -> Item:
    """The notice sent in place of items skipped because the sink fell more than `bound` behind."""
    message = (
        f"{sink} fell more than {bound} {source} items behind: {skipped} skipped (ids {first} to {last})"
    )
    details = {"skipped": skipped, "first": first, "last": last, "bound": bound}
    return Item("stream", last, at, "dropped", message, None, {"of": source}, details)

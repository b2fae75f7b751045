"""Rule hits: how many connections each rule decided in a window, when it last did, and which rules
of the active policy decided nothing (candidates for removal, or signs of a stale inventory).

Fed by summary rows (deduplicated by `flowset`: a connection both ends reported counts once), the
agents' rule counters (what each rule's nftables/iptables counters grew by in the window, summed
over workloads) and the active engine (for the list of rules); feeds `GET /flows/rule-hits` and
`microseg rule-hits`. The deciding rule is the one the agents recorded when they saw the flow
(their NFLOG prefix or the document's verdict) or whose kernel counter moved, not a
re-evaluation: hits say what happened, `simulate` says what would.

The two sources are kept side by side, not added: flows count connections (and miss what an agent
did not report, e.g. flows lost with a full spool), counters count the packets that reached the
rule (connection attempts, including ones conntrack never reported). A rule is used when either
saw it; its last hit is the later of the two.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from microseg.analytics import collecting, flowset
from microseg.engine import engine as engine_mod

SYSTEM_PREFIX = "system/"
"""Refs of rules the data plane always has (loopback, control plane): counted, never "unused"."""
DEFAULT = "default"


@dataclass(frozen=True)
class Hit:
    """One rule's share of the window."""

    rule: str
    connections: int
    flows: int
    last_hit: float
    verdicts: tuple[str, ...]
    counter_packets: int = 0
    counter_bytes: int = 0

    @property
    def sources(self) -> tuple[str, ...]:
        """Which sources saw the rule: `counters`, `flows`."""
        return (
            *(("counters",) if self.counter_packets or self.counter_bytes else ()),
            *(("flows",) if self.flows else ()),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "connections": self.connections,
            "flows": self.flows,
            "lastHit": self.last_hit,
            "verdicts": list(self.verdicts),
            "counterPackets": self.counter_packets,
            "counterBytes": self.counter_bytes,
            "sources": list(self.sources),
        }


@dataclass(frozen=True)
class RuleHits:
    """Hits per rule (most connections first) and the active rules with none."""

    hits: tuple[Hit, ...]
    unused: tuple[str, ...]
    skipped_rows: int = 0
    """Summary rows left out because they do not check out (`flowset`)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "rules": [h.to_json() for h in self.hits],
            "unused": list(self.unused),
            "skippedRows": self.skipped_rows,
        }


@collecting.while_paused
def rule_hits(
    rows: Iterable[flowset.Row],
    engine: engine_mod.PolicyEngine,
    counters: Iterable[Mapping[str, Any]] = (),
) -> RuleHits:
    """Connections, flows, counter packets and bytes and the last hit per rule; the enabled rules
    nothing hit. `counters` are per-rule rows {rule, packets, bytes, lastHit} (each rule once)."""
    found, skipped = _from_flows(rows, engine)
    for counted in counters:
        hit = found.get(counted["rule"]) or Hit(counted["rule"], 0, 0, 0.0, ())
        found[hit.rule] = dataclasses.replace(
            hit,
            counter_packets=hit.counter_packets + counted["packets"],
            counter_bytes=hit.counter_bytes + counted["bytes"],
            last_hit=max(hit.last_hit, counted["lastHit"]),
        )
    hits = tuple(sorted(found.values(), key=lambda h: (-max(h.connections, h.counter_packets), h.rule)))
    enabled = [r.ref for r in engine.estate.rules if r.enabled]
    unused = tuple(ref for ref in enabled if ref not in found and not ref.startswith(SYSTEM_PREFIX))
    return RuleHits(hits, unused, skipped)


def _from_flows(rows: Iterable[flowset.Row], engine: engine_mod.PolicyEngine) -> tuple[dict[str, Hit], int]:
    found: dict[str, list[Any]] = {}
    read, skipped = flowset.counted_flows(rows, engine)
    for flow in read:
        ref = flow.rule or DEFAULT
        entry = found.setdefault(ref, [0, 0, 0.0, set()])
        entry[0] += flow.connections
        entry[1] += 1
        entry[2] = max(entry[2], flow.last_seen)
        entry[3].add(flow.verdict.value)
    return {ref: Hit(ref, c, f, last, tuple(sorted(v))) for ref, (c, f, last, v) in found.items()}, skipped

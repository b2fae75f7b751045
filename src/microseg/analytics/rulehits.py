"""Rule hits: how many connections each rule decided in a window, when it last did, and which rules
of the active policy decided nothing (candidates for removal, or signs of a stale inventory).

Fed by summary rows (deduplicated by `flowset`: a connection both ends reported counts once) and
the active engine (for the list of rules); feeds `GET /flows/rule-hits` and `microseg rule-hits`.
The deciding rule is the one the agents recorded when they saw the flow (their NFLOG prefix or the
document's verdict), not a re-evaluation: hits say what happened, `simulate` says what would.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from microseg.analytics import flowset
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

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "connections": self.connections, "flows": self.flows,
                "lastHit": self.last_hit, "verdicts": list(self.verdicts)}  # fmt: skip


@dataclass(frozen=True)
class RuleHits:
    """Hits per rule (most connections first) and the active rules with none."""

    hits: tuple[Hit, ...]
    unused: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"rules": [h.to_json() for h in self.hits], "unused": list(self.unused)}


def rule_hits(rows: Iterable[Mapping[str, Any]], engine: engine_mod.PolicyEngine) -> RuleHits:
    """Connections, flows and last hit per deciding rule; the enabled rules nothing hit."""
    found: dict[str, list[Any]] = {}
    for flow in flowset.flows(rows, engine):
        ref = flow.rule or DEFAULT
        entry = found.setdefault(ref, [0, 0, 0.0, set()])
        entry[0] += flow.connections
        entry[1] += 1
        entry[2] = max(entry[2], flow.last_seen)
        entry[3].add(flow.verdict.value)
    hits = tuple(
        sorted(
            (Hit(ref, c, f, last, tuple(sorted(v))) for ref, (c, f, last, v) in found.items()),
            key=lambda h: (-h.connections, h.rule),
        )
    )
    enabled = [r.ref for r in engine.estate.rules if r.enabled]
    unused = tuple(ref for ref in enabled if ref not in found and not ref.startswith(SYSTEM_PREFIX))
    return RuleHits(hits, unused)

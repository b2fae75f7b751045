"""Invariants against incoming flows: an event when a connection that got through breaks one.

Fed by flow ingestion with each batch before it is written; feeds the events table. A connection
"got through" when its verdict is allowed or would-block (alert mode lets it pass); blocked ones
prove the invariant rather than break it. Checked against the active version's invariants.

A violation is reported once per (invariant, source, destination, port) per hour on each replica:
long connections are re-reported by agents every minute, and one event says enough. A second
replica may report the same violation once more, which errs on the side of telling.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from microseg import errors
from microseg.engine import invariants
from microseg.engine.engine import PolicyEngine
from microseg.model import invariants as model
from microseg.model import selectors, services, verdicts
from microseg.server import models

QUIET_SECONDS = 3600.0
"""How long one violation stays reported before it is reported again."""
MAX_REMEMBERED = 100_000


class Watch:
    """What was reported lately, per replica."""

    def __init__(self) -> None:
        self._reported: dict[tuple[str, str, str, str], float] = {}
        self._lock = threading.Lock()

    def events(
        self, eng: PolicyEngine, lock: threading.Lock, workload: str, records: list[models.FlowRecord]
    ) -> list[dict[str, Any]]:
        """One event per invariant of `eng`'s estate broken by the batch's connections (new ones
        only); `lock` guards the engine's caches."""
        if not eng.estate.invariants:  # the usual case: the ingest hot path pays nothing more
            return []
        passed = [r for r in records if r["verdict"] != "blocked" and r["proto"] != "other"]
        if not passed:
            return []
        with lock:
            found = _violations(BatchGuard(eng), passed)
        fresh = self._fresh(found)
        return [_event(workload, name, hits) for name, hits in fresh.items()]

    def _fresh(self, found: list[Hit]) -> dict[str, list[dict[str, Any]]]:
        now = time.monotonic()
        out: dict[str, list[dict[str, Any]]] = {}
        with self._lock:
            if len(self._reported) > MAX_REMEMBERED:
                self._reported = {k: t for k, t in self._reported.items() if now - t < QUIET_SECONDS}
            for name, hit in found:
                key = (name, hit["src"], hit["dst"], f"{hit.get('dport')}/{hit['proto']}")
                if now - self._reported.get(key, -QUIET_SECONDS) < QUIET_SECONDS:
                    continue
                self._reported[key] = now
                out.setdefault(name, []).append(hit)
        return out


Hit = tuple[str, dict[str, Any]]
"""(invariant name, the flow record that breaks it)."""
_LABEL_PEERS = (selectors.SelectorPeer, selectors.AnyPeer)
"""Peers that `Guard.peer_matches` decides by the endpoint's workload alone, not its address."""


class BatchGuard(invariants.Guard):
    """A Guard for one batch that remembers what it looked up, and asks about a connection's peer
    only when its reporter's own end leaves an invariant to break.

    Each distinct address is resolved to an endpoint once, and each side (an invariant's peer list
    against an endpoint) is matched once per workload when the list names only selectors and `any`
    (they look at labels only, so every address without a workload shares one answer), else once
    per endpoint. Per own endpoint, direction, port and protocol it keeps the invariants that the
    port concerns and the own end can break (`Guard.serves`, `Guard.can_break`); a connection is
    judged against those only, and not at all when there are none, without resolving its peer.

    It deliberately does not remember across batches: the engine is updated in place when workloads
    change, so what an address resolved to may not hold for the next batch."""

    def __init__(self, eng: PolicyEngine) -> None:
        super().__init__(eng)
        self._ends: dict[str, verdicts.Endpoint | None] = {}
        self._sides: dict[tuple[int, int | str | None], bool] = {}
        self._by_labels: dict[int, bool] = {}
        self._open: dict[tuple[int, bool, int | None, str], list[model.Invariant]] = {}

    def side(self, peers: tuple[selectors.Peer, ...], endpoint: verdicts.Endpoint) -> bool:
        # by identity: the peers are the invariants' and the endpoints this guard's own (one per
        # address, kept in `_ends`), all alive as long as the guard; hashing values costs more
        lists = id(peers)
        by_labels = self._by_labels.get(lists)
        if by_labels is None:
            by_labels = self._by_labels[lists] = all(isinstance(p, _LABEL_PEERS) for p in peers)
        key = (lists, endpoint.workload if by_labels else id(endpoint))
        found = self._sides.get(key)
        if found is None:
            found = self._sides[key] = super().side(peers, endpoint)
        return found

    def endpoint(self, address: str) -> verdicts.Endpoint | None:
        """The endpoint at `address`; None when it is not an address (the model only bounds its
        length), which no invariant can say anything about."""
        if address not in self._ends:
            try:
                self._ends[address] = self.eng.endpoint(address)
            except errors.LookupFailedError:
                self._ends[address] = None
        return self._ends[address]

    def broken(self, own: str, peer: str, outgoing: bool, port: int | None, proto: str) -> list[str]:
        """The names of the invariants broken by a connection that got through, reported by the
        workload at `own`: from `own` to `peer` when `outgoing`, else from `peer` to `own`."""
        mine = self.endpoint(own)
        if mine is None:
            return []
        key = (id(mine), outgoing, port, proto)
        candidates = self._open.get(key)
        if candidates is None:
            protocol = services.Protocol(proto)
            candidates = self._open[key] = [
                i
                for i in self.declared
                if self.serves(i, port, protocol) and self.can_break(i, mine, source=outgoing)
            ]
        other = self.endpoint(peer) if candidates else None
        if other is None:
            return []
        src, dst = (mine, other) if outgoing else (other, mine)
        return [i.name for i in self.broken_by_flow(src, dst, port, services.Protocol(proto), candidates)]


def _violations(guard: BatchGuard, records: list[models.FlowRecord]) -> list[Hit]:
    """The records that break an invariant; one question per distinct connection, since a batch
    repeats them. A record's own end is the reporter's (`ingest` dropped the others)."""
    out: list[Hit] = []
    answers: dict[tuple[str, str, str, int | None, str], list[str]] = {}
    for r in records:
        key = (r["direction"], r["src"], r["dst"], r.get("dport"), r["proto"])
        names = answers.get(key)
        if names is None:
            outgoing = key[0] == "out"
            own, peer = (key[1], key[2]) if outgoing else (key[2], key[1])
            names = answers[key] = guard.broken(own, peer, outgoing, key[3], key[4])
        if names:  # the record in full only for what is told: most records break nothing
            full: dict[str, Any] = {**models.FLOW_DEFAULTS, **r}
            out.extend((name, full) for name in names)
    return out


def _event(workload: str, name: str, hits: list[dict[str, Any]]) -> dict[str, Any]:
    first = hits[0]
    where = f"{first['src']} -> {first['dst']} {first['dport']}/{first['proto']} ({first['verdict']})"
    return {
        "kind": "invariant-violation",
        "workload": workload,
        "message": f"{workload}: invariant {name} broken by {len(hits)} observed flow(s), e.g. {where}",
        "details": {"invariant": name, "count": len(hits), "examples": hits[:5]},
    }

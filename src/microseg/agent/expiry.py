"""Cutting the connections of an expired rule: what the kernel's time match cannot do alone.

Fed by the reconciler (`follow` with every document it applies, `check` on every tick); feeds
conntrack (deletes) and the agent's status (one `Expiry` per closed window). At a timed allow
entry's `notAfter` the rendered `meta time < T` already stops new connections, with no help from
anyone; what survives is every connection the entry admitted earlier, riding
`ct state established,related accept`. For each tracked connection the document's own meaning
(`semantics.decide`, the spec the renderers obey) is asked twice: just before the expiry (was the
expired entry the deciding rule?) and now (does anything still allow it?). A connection allowed
then by that rule and by nothing now loses its conntrack entry; its next packet meets the rules as
a new connection and is dropped.

A window counts as closed when `notAfter` lies within `lookback` seconds before now and has not
been handled yet, so an agent that was down at the moment of expiry (its rules stay: fail-static)
still cuts at start, from the saved document.

What it deliberately does not do: cut anything in alert or visibility mode (nothing is blocked
there; it counts what enforce mode would cut), cut loopback or control-plane connections (no tier
decides them), send resets (both ends see a stalled connection until their own timeouts), cut
ICMP or other port-less entries (conntrack cannot name them by tuple here; they time out within
seconds), honour process constraints (it decides at port level, like `decide`), or act on a rule
that a new document drops before its window closes (a revoked rule): only closing windows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from microseg.agent import conntrack, inventory
from microseg.model import addresses, rules, ruleset, services, workloads
from microseg.render import semantics

log = logging.getLogger("microseg.agent")

LOOKBACK = 24 * 3600.0
"""Seconds after a window closed in which an agent (re)started late still cuts its connections."""

JUST_BEFORE = 0.001
"""How long before `notAfter` the "was it allowed" question is asked (windows are whole seconds)."""

_PROTOCOLS = {6: services.Protocol.TCP, 17: services.Protocol.UDP, 132: services.Protocol.SCTP}


@dataclass(frozen=True)
class Expiry:
    """One rule whose window closed on this workload, and what became of its connections."""

    ref: str
    not_after: int
    at: float
    """When the agent handled it (epoch seconds)."""
    cut: int
    """Conntrack entries removed."""
    would_cut: int
    """Connections left alone because the workload does not enforce (alert, visibility)."""


class _Timed(NamedTuple):
    """A timed allow entry of the followed document."""

    not_after: int
    direction: semantics.Direction
    entry: ruleset.Entry


class _Connection(NamedTuple):
    """A tracked connection as the workload sees it."""

    event: conntrack.CtEvent
    direction: semantics.Direction
    peer: addresses.Address
    local: addresses.Address
    protocol: services.Protocol
    port: int


class ExpiryCutter:
    """Notices closed windows of the applied document and cuts what only they allowed.

    Runs in the network namespace of the thread that calls `check` (the agent's own)."""

    def __init__(
        self,
        *,
        lookback: float = LOOKBACK,
        local: Callable[[], Iterable[str]] = inventory.addresses,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.lookback = lookback
        self.local = local
        self.wall = wall
        self._doc: ruleset.RulesetDocument | None = None
        self._timed: tuple[_Timed, ...] = ()
        self._handled: set[tuple[str, int]] = set()

    def follow(self, doc: ruleset.RulesetDocument | None) -> None:
        """Make `doc` the document whose windows are watched (the one the kernel now enforces)."""
        self._doc = doc
        self._timed = _timed_allows(doc) if doc is not None else ()

    def check(self) -> list[Expiry]:
        """Handle every window closed since the last check; what was done, one per rule.

        Raises on a conntrack failure, leaving those windows unhandled for the next check."""
        now = self.wall()
        due = self._due(now)
        if not due or self._doc is None:
            return []
        connections = _connections(conntrack.dump(), self._local_addresses())
        done = [self._expire(self._doc, group, connections, now) for group in due.values()]
        self._handled = {key for key in self._handled if key[1] > now - self.lookback}
        return done

    def _due(self, now: float) -> dict[tuple[str, int], list[_Timed]]:
        due: dict[tuple[str, int], list[_Timed]] = {}
        for timed in self._timed:
            key = (timed.entry.ref, timed.not_after)
            if now - self.lookback < timed.not_after <= now and key not in self._handled:
                due.setdefault(key, []).append(timed)
        return due

    def _local_addresses(self) -> frozenset[addresses.Address]:
        assert self._doc is not None
        found = {addresses.address(a) for a in self.local()}
        return frozenset(found | {n.network_address for n in self._doc.addresses})

    def _expire(
        self, doc: ruleset.RulesetDocument, group: list[_Timed], connections: list[_Connection], now: float
    ) -> Expiry:
        """Cut (or, not enforcing, count) what only the entries of one closed window allowed."""
        ref, not_after = group[0].entry.ref, group[0].not_after
        doomed = [c.event for c in connections if _only_allowed_by(doc, group, c, now)]
        enforcing = doc.mode is workloads.Mode.ENFORCE
        cut = conntrack.delete(doomed) if enforcing and doomed else 0
        self._handled.add((ref, not_after))
        level = logging.WARNING if doomed else logging.INFO
        if enforcing:
            log.log(level, "rule %s expired at %d: cut %d connection(s) only it allowed", ref, not_after, cut)
        else:
            log.log(
                level,
                "rule %s expired at %d: %s mode, %d connection(s) only it allowed left open",
                ref,
                not_after,
                doc.mode.value,
                len(doomed),
            )
        return Expiry(ref, not_after, now, cut, 0 if enforcing else len(doomed))


def _timed_allows(doc: ruleset.RulesetDocument) -> tuple[_Timed, ...]:
    """Allow entries with an end, by end: only their closing can take an allowance away."""
    sides: tuple[tuple[semantics.Direction, tuple[ruleset.Entry, ...]], ...] = (
        ("ingress", doc.ingress),
        ("egress", doc.egress),
    )
    found = [
        _Timed(entry.not_after, direction, entry)
        for direction, entries in sides
        for entry in entries
        if entry.action is rules.Action.ALLOW and entry.not_after is not None
    ]
    return tuple(sorted(found, key=lambda t: (t.not_after, t.entry.ref)))


def _connections(events: list[conntrack.CtEvent], local: frozenset[addresses.Address]) -> list[_Connection]:
    return [c for c in (_connection(ev, local) for ev in events) if c is not None]


def _connection(ev: conntrack.CtEvent, local: frozenset[addresses.Address]) -> _Connection | None:
    """The connection in the workload's terms; None for what no tier decides here: loopback (also a
    local address talking to itself), forwarded traffic, and entries without ports."""
    if ev.sport is None or ev.dport is None:
        return None
    src, dst = addresses.address(ev.src), addresses.address(ev.dst)
    if src.is_loopback or dst.is_loopback or (src in local) == (dst in local):
        return None
    protocol = _PROTOCOLS.get(ev.proto, services.Protocol.ANY)
    if dst in local:
        return _Connection(ev, "ingress", src, dst, protocol, ev.dport)
    return _Connection(ev, "egress", dst, src, protocol, ev.dport)


def _only_allowed_by(doc: ruleset.RulesetDocument, group: list[_Timed], c: _Connection, now: float) -> bool:
    """Whether the expired rule decided `c` just before its window closed and nothing allows it now."""
    timed = [t for t in group if t.direction == c.direction]
    if not timed:
        return False
    before = timed[0].not_after - JUST_BEFORE
    flow = semantics.Flow(c.peer, c.local, c.protocol, c.port, before)
    if not any(semantics.entry_matches(doc, t.entry, flow) for t in timed):
        return False  # cheap filter first: most connections are not the rule's at all
    action, ref = semantics.decide(doc, c.direction, c.peer, c.local, c.protocol, c.port, before)
    if action is not rules.Action.ALLOW or ref != timed[0].entry.ref:
        return False
    action, _ = semantics.decide(doc, c.direction, c.peer, c.local, c.protocol, c.port, now)
    return action is not rules.Action.ALLOW

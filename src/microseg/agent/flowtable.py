"""The flow table: conntrack events and NFLOG packets become flow records for the server.

Fed by the agent's observe loop (`on_conntrack` with the owner `procfs.OwnerIndex` found,
`on_log`, `on_dump`); feeds the spool through `drain`, whose records have exactly the keys of the
server's `FlowRecord` (the client's ephemeral port dropped; counts of one aggregate add up).

    conntrack NEW ──> held `grace` s ──┬─ a would-block log for the 5-tuple? ──> would-block
    NFLOG ms:w: ──> pending `grace` s ─┘  no log: allowed (rule from `decide`)   (counted once)
    NFLOG ms:d: ────────────────────────────────────────────────────────────> blocked
    DESTROY / dump ──> counter deltas added to the aggregate the connection belongs to

Why the wait: in alert mode a would-block connection goes through, so conntrack reports it too, and
its log line, batched by the kernel, may come after the NEW event. In enforce mode a dropped
packet never becomes a conntrack entry, so the log line is all there is. Directions are the
workload's view: "in" when the destination is a local address, "out" when the source is;
loopback, local-to-local and foreign traffic are ignored.

What it deliberately does not do: read the kernel, attribute processes (callers pass owners), or
retract a flow counted as allowed when its log line arrives after `grace` (it is reported as
would-block as well, and counted in `overflow["late-logs"]`). Everything is bounded: aggregates
between drains, tracked connections and waiting events; `overflow` counts what the bounds cost.
"""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable
from typing import Any

from microseg.agent import conntrack, nflog, procfs

Decide = Callable[[str, str, str, str, int | None], tuple[str, str | None]]
"""(direction, peer, local, proto, port) -> (action, rule ref) for a connection nobody logged."""

FlowKey = tuple[str, str, str, int | None, str, str | None, str | None, str, str | None]
"""direction, src, dst, dport, proto, process, user, verdict, rule: one record per key."""

Tuple5 = tuple[int, str, str, int | None, int | None]
"""proto, src, dst, sport, dport in the original direction: one connection."""

PROTOCOLS = {6: "tcp", 17: "udp", 132: "sctp", 1: "icmp", 58: "icmp"}
_PORTED = frozenset({"tcp", "udp", "sctp"})
_WOULD_BLOCK = frozenset({"deny", "drop", "blocked", "would-block"})
"""Actions of `decide` that make an unlogged connection would-block: conntrack saw it, so it went
through, and a deny means "would be blocked" (alert mode with a rate-limited log, visibility)."""
_PROCESS_MAX, _USER_MAX, _RULE_MAX = 300, 100, 200
"""The server's FlowRecord field limits."""
_ADDRESS_REFRESH = 1.0
"""At most this often, traffic with no local end re-reads the local addresses (they may change)."""


class _Aggregate:
    __slots__ = ("bytes", "connections", "first", "last", "packets")

    def __init__(self, at: float) -> None:
        self.first = self.last = at
        self.packets = self.bytes = self.connections = 0


class _Connection:
    """A connection counted in an aggregate, and the counters already reported for it."""

    __slots__ = ("bytes", "key", "packets", "seen")

    def __init__(self, key: FlowKey, packets: int, nbytes: int, seen: float) -> None:
        self.key, self.packets, self.bytes, self.seen = key, packets, nbytes, seen


class _Held:
    """A conntrack NEW event waiting for a would-block log line, and the counters of dump lines
    or a DESTROY event that came meanwhile."""

    __slots__ = ("at", "bytes", "deadline", "direction", "ended", "owner", "packets", "seen")

    def __init__(self, direction: str, at: float, owner: procfs.Process | None, deadline: float) -> None:
        self.direction, self.at, self.owner, self.deadline = direction, at, owner, deadline
        self.packets = self.bytes = 0
        self.seen = at
        self.ended = False


class _Logged:
    """Would-block log lines of one connection waiting for its conntrack entry."""

    __slots__ = ("bytes", "deadline", "direction", "first", "last", "owner", "packets", "rule")

    def __init__(
        self,
        direction: str,
        rule: str,
        owner: procfs.Process | None,
        pkt: nflog.LoggedPacket,
        deadline: float,
    ) -> None:
        self.direction, self.rule, self.owner, self.deadline = direction, rule, owner, deadline
        self.first = self.last = pkt.at
        self.packets, self.bytes = 1, pkt.length


class FlowTable:
    """Aggregates what the agent saw between two `drain` calls.

    `local_addresses` returns the workload's addresses (read at start, at every drain, and at most
    once a second when traffic has no local end). `decide` names the rule of a connection nobody
    logged; its answers are cached until the next drain (the document may change in between)."""

    def __init__(
        self,
        local_addresses: Callable[[], Collection[str]],
        decide: Decide | None = None,
        grace: float = 1.0,
        clock: Callable[[], float] = time.time,
        *,
        max_aggregates: int = 50_000,
        max_connections: int = 100_000,
        max_pending: int = 100_000,
    ) -> None:
        self.grace = grace
        self.max_aggregates, self.max_connections, self.max_pending = (
            max_aggregates,
            max_connections,
            max_pending,
        )
        self.overflow = {"aggregates": 0, "connections": 0, "pending": 0, "late-logs": 0}
        """Records dropped (aggregate cap), connections whose later counters are lost (cap),
        events settled before `grace` ran out (cap), and log lines that came after `grace`."""
        self._addresses_of = local_addresses
        self._decide = decide
        self._clock = clock
        self._local: frozenset[str] = frozenset()
        self._addresses_read = float("-inf")
        self._aggregates: dict[FlowKey, _Aggregate] = {}
        self._connections: dict[Tuple5, _Connection] = {}
        self._held: dict[Tuple5, _Held] = {}
        self._held_order: deque[tuple[float, Tuple5, _Held]] = deque()
        self._logged: dict[Tuple5, _Logged] = {}
        self._logged_order: deque[tuple[float, Tuple5, _Logged]] = deque()
        self._decisions: dict[tuple[str, str, str, str, int | None], tuple[str, str | None]] = {}
        self._read_addresses()

    # -- events ---------------------------------------------------------------------------------

    def on_conntrack(self, ev: conntrack.CtEvent, owner: procfs.Process | None) -> None:
        """A NEW event (`owner`: the serving process of an inbound connection, the client of an
        outbound one), or a DESTROY event or dump line carrying counters."""
        direction = self._direction(ev.src, ev.dst)
        if direction is None:
            return
        t5 = (ev.proto, ev.src, ev.dst, ev.sport, ev.dport)
        if ev.kind == "new":
            self._on_new(t5, direction, ev.at, owner)
            return
        conn = self._connections.get(t5)
        if conn is None:
            held = self._held.get(t5)
            if held is not None:  # still within grace: its counters wait with it
                held.packets, held.bytes = max(held.packets, ev.packets), max(held.bytes, ev.bytes)
                held.seen, held.ended = ev.at, ev.kind == "destroy"
                return
            conn = self._settle(t5, direction, ev.at, owner)
        self._count(conn, ev.packets, ev.bytes, ev.at)
        if ev.kind == "destroy":
            self._connections.pop(t5, None)

    def on_log(self, pkt: nflog.LoggedPacket, owner: procfs.Process | None = None) -> None:
        """A packet one of our rules logged; other prefixes are ignored."""
        parsed = nflog.parse_prefix(pkt.prefix)
        direction = self._direction(pkt.src, pkt.dst) if parsed else None
        if parsed is None or direction is None:
            return
        verdict, rule = parsed
        t5 = (pkt.proto, pkt.src, pkt.dst, pkt.sport, pkt.dport)
        if verdict == "blocked":  # never confirmed by conntrack: the log line is the whole story
            self._add(self._key(direction, t5, owner, verdict, rule), pkt.at, 1, pkt.length, connections=1)
            return
        conn = self._connections.get(t5)
        if conn is not None:
            self._log_known(conn, pkt, direction, rule)
            return
        held = self._held.pop(t5, None)
        if held is not None:
            logged = _Logged(direction, rule, owner, pkt, 0.0)
            self._settled(t5, held, self._join(t5, logged, held.owner or owner, held.at))
            return
        pending = self._logged.get(t5)
        if pending is not None:  # a retransmission before conntrack confirmed the connection
            pending.packets += 1
            pending.bytes += pkt.length
            pending.last = max(pending.last, pkt.at)
            return
        now = self._clock()
        self._make_room(now)
        deadline = now + self.grace
        logged = _Logged(direction, rule, owner, pkt, deadline)
        self._logged[t5] = logged
        self._logged_order.append((deadline, t5, logged))

    def on_dump(
        self,
        events: Iterable[conntrack.CtEvent],
        started: float | None = None,
        owner_of: Callable[[conntrack.CtEvent], procfs.Process | None] | None = None,
    ) -> None:
        """A full conntrack dump: counters of every connection, and the end of connections that
        are no longer in the table (their DESTROY event was lost). `started` is when the dump was
        asked for (default: the earliest event time, as `conntrack.dump` stamps them);
        `owner_of` names the owner of connections this table has not seen before."""
        earliest = float("inf")
        for ev in events:
            earliest = min(earliest, ev.at)
            t5 = (ev.proto, ev.src, ev.dst, ev.sport, ev.dport)
            known = t5 in self._connections or t5 in self._held
            self.on_conntrack(ev, owner_of(ev) if owner_of is not None and not known else None)
        cutoff = started if started is not None else min(earliest, self._clock())
        gone = [t5 for t5, conn in self._connections.items() if conn.seen < cutoff]
        for t5 in gone:
            del self._connections[t5]

    def drain(self, now: float | None = None) -> list[dict[str, Any]]:
        """The records aggregated since the last drain (events still within `grace` wait for the
        next one); counts start again from zero."""
        self._expire(self._clock() if now is None else now)
        records = [_record(key, agg) for key, agg in self._aggregates.items()]
        self._aggregates = {}
        self._decisions.clear()
        self._read_addresses()
        return records

    # -- connections ----------------------------------------------------------------------------

    def _on_new(self, t5: Tuple5, direction: str, at: float, owner: procfs.Process | None) -> None:
        if t5 in self._connections or t5 in self._held:
            return  # already known from a dump or a duplicate event
        logged = self._logged.pop(t5, None)
        if logged is not None:
            self._join(t5, logged, owner or logged.owner, at)
            return
        now = self._clock()
        self._make_room(now)
        deadline = now + self.grace
        held = _Held(direction, at, owner, deadline)
        self._held[t5] = held
        self._held_order.append((deadline, t5, held))

    def _settle(self, t5: Tuple5, direction: str, at: float, owner: procfs.Process | None) -> _Connection:
        """The connection of a DESTROY event or dump line the table has not seen begin."""
        logged = self._logged.pop(t5, None)
        if logged is not None:
            return self._join(t5, logged, owner or logged.owner, at)
        return self._allowed(t5, direction, at, owner)

    def _allowed(self, t5: Tuple5, direction: str, at: float, owner: procfs.Process | None) -> _Connection:
        """A connection nobody logged: allowed, unless `decide` says the document denies it."""
        _, src, dst, _, dport = t5
        peer, local = (src, dst) if direction == "in" else (dst, src)
        verdict, rule = self._decision(direction, peer, local, PROTOCOLS.get(t5[0], "other"), dport)
        key = self._key(direction, t5, owner, verdict, rule)
        self._add(key, at, 0, 0, connections=1)
        return self._open(t5, key, 0, 0, at)

    def _join(self, t5: Tuple5, logged: _Logged, owner: procfs.Process | None, at: float) -> _Connection:
        """A would-block connection: its log lines and its conntrack entry, counted once."""
        key = self._key(logged.direction, t5, owner, "would-block", logged.rule)
        self._add(key, min(logged.first, at), logged.packets, logged.bytes, connections=1)
        self._add(key, max(logged.last, at), 0, 0)
        # conntrack's counters include the logged packets: only what comes on top is added later
        return self._open(t5, key, logged.packets, logged.bytes, at)

    def _open(self, t5: Tuple5, key: FlowKey, packets: int, nbytes: int, at: float) -> _Connection:
        conn = _Connection(key, packets, nbytes, at)
        if len(self._connections) < self.max_connections:
            self._connections[t5] = conn
        else:
            self.overflow["connections"] += 1
        return conn

    def _count(self, conn: _Connection, packets: int, nbytes: int, at: float) -> None:
        """Add what the connection's counters grew by since they were last reported."""
        conn.seen = at
        more_packets, more_bytes = packets - conn.packets, nbytes - conn.bytes
        if more_packets <= 0 and more_bytes <= 0:
            return
        conn.packets, conn.bytes = max(packets, conn.packets), max(nbytes, conn.bytes)
        self._add(conn.key, at, max(more_packets, 0), max(more_bytes, 0))

    def _settled(self, t5: Tuple5, held: _Held, conn: _Connection) -> None:
        """Apply what happened to a held connection while it waited."""
        if held.packets or held.bytes:
            self._count(conn, held.packets, held.bytes, held.seen)
        if held.ended:
            self._connections.pop(t5, None)

    def _log_known(self, conn: _Connection, pkt: nflog.LoggedPacket, direction: str, rule: str) -> None:
        """A would-block log line for a connection already counted."""
        if conn.key[7] == "would-block":  # another packet before the reply (UDP, retransmitted SYN)
            conn.packets += 1
            conn.bytes += pkt.length
            self._add(conn.key, pkt.at, 1, pkt.length)
            return
        self.overflow["late-logs"] += 1
        _, src, dst, dport, proto, process, user, _, _ = conn.key
        self._add(
            (direction, src, dst, dport, proto, process, user, "would-block", rule), pkt.at, 1, pkt.length
        )

    # -- waiting events -------------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        """Settle the events whose grace has run out by `now`."""
        while self._held_order and self._held_order[0][0] <= now:
            self._settle_oldest_new(now)
        while self._logged_order and self._logged_order[0][0] <= now:
            self._settle_oldest_log(now)

    def _make_room(self, now: float) -> None:
        """Before an event starts waiting: settle what is due (so waiting stays bounded by the
        event rate times `grace` even without drains), then the oldest beyond the cap."""
        self._expire(now)
        while len(self._held) >= self.max_pending and self._held_order:
            self._settle_oldest_new(now)
        while len(self._logged) >= self.max_pending and self._logged_order:
            self._settle_oldest_log(now)

    def _settle_oldest_new(self, now: float) -> None:
        deadline, t5, held = self._held_order.popleft()
        if self._held.get(t5) is not held:
            return  # joined by a log line meanwhile
        del self._held[t5]
        if deadline > now:
            self.overflow["pending"] += 1
        self._settled(t5, held, self._allowed(t5, held.direction, held.at, held.owner))

    def _settle_oldest_log(self, now: float) -> None:
        """A would-block log line whose connection conntrack never confirmed (or whose NEW event
        was lost): it counts on its own."""
        deadline, t5, logged = self._logged_order.popleft()
        if self._logged.get(t5) is not logged:
            return
        del self._logged[t5]
        if deadline > now:
            self.overflow["pending"] += 1
        key = self._key(logged.direction, t5, logged.owner, "would-block", logged.rule)
        self._add(key, logged.first, logged.packets, logged.bytes, connections=1)
        self._add(key, logged.last, 0, 0)

    # -- aggregates -----------------------------------------------------------------------------

    def _add(self, key: FlowKey, at: float, packets: int, nbytes: int, connections: int = 0) -> None:
        agg = self._aggregates.get(key)
        if agg is None:
            if len(self._aggregates) >= self.max_aggregates:
                self.overflow["aggregates"] += 1
                return
            agg = self._aggregates[key] = _Aggregate(at)
        elif at < agg.first:
            agg.first = at
        agg.last = max(agg.last, at)
        agg.packets += packets
        agg.bytes += nbytes
        agg.connections += connections

    def _key(
        self, direction: str, t5: Tuple5, owner: procfs.Process | None, verdict: str, rule: str | None
    ) -> FlowKey:
        proto_number, src, dst, _, dport = t5
        proto = PROTOCOLS.get(proto_number, "other")
        process = owner.label[:_PROCESS_MAX] if owner is not None else None
        user = owner.user[:_USER_MAX] if owner is not None else None
        port = dport if proto in _PORTED else None
        return (direction, src, dst, port, proto, process, user, verdict, rule[:_RULE_MAX] if rule else rule)

    def _decision(
        self, direction: str, peer: str, local: str, proto: str, port: int | None
    ) -> tuple[str, str | None]:
        if self._decide is None:
            return "allowed", None
        question = (direction, peer, local, proto, port)
        answer = self._decisions.get(question)
        if answer is None:
            action, ref = self._decide(direction, peer, local, proto, port)
            answer = ("would-block" if action in _WOULD_BLOCK else "allowed", ref)
            if len(self._decisions) >= self.max_pending:
                self._decisions.clear()
            self._decisions[question] = answer
        return answer

    # -- addresses ------------------------------------------------------------------------------

    def _direction(self, src: str, dst: str) -> str | None:
        if _loopback(src) or _loopback(dst):
            return None
        local = self._local
        src_local, dst_local = src in local, dst in local
        if dst_local != src_local:
            return "in" if dst_local else "out"
        if not src_local and self._clock() - self._addresses_read >= _ADDRESS_REFRESH:
            self._read_addresses()
            src_local, dst_local = src in self._local, dst in self._local
            if dst_local != src_local:
                return "in" if dst_local else "out"
        return None

    def _read_addresses(self) -> None:
        self._local = frozenset(filter(None, map(_canonical, self._addresses_of())))
        self._addresses_read = self._clock()


def _record(key: FlowKey, agg: _Aggregate) -> dict[str, Any]:
    direction, src, dst, dport, proto, process, user, verdict, rule = key
    return {
        "direction": direction,
        "src": src,
        "dst": dst,
        "dport": dport,
        "proto": proto,
        "process": process,
        "user": user,
        "bytes": agg.bytes,
        "packets": agg.packets,
        "connections": agg.connections,
        "first_seen": agg.first,
        "last_seen": agg.last,
        "verdict": verdict,
        "rule": rule,
    }


def _loopback(address: str) -> bool:
    return address.startswith("127.") or address == "::1"


def _canonical(address: str) -> str | None:
    """The address as conntrack and NFLOG spell it (`inet_ntop`); a `/prefix` is ignored."""
    try:
        return str(ipaddress.ip_address(address.split("/", 1)[0]))
    except ValueError:
        return None

"""Flow sets: summary rows from the flow store, parsed once, resolved to peers and deduplicated.

Fed by the flow store's summary rows (plain mappings of the agreed shape: bucket, reporter,
direction, src, dst, dport, proto, process, verdict, rule, firstSeen, lastSeen, connections, bytes,
packets) and by a PolicyEngine (who owns an address). Feeds the dependency map, the simulator and
the recommender, which all read `Flow` values and never the raw rows.

A connection between two managed workloads is reported by both ends (the source as "out", the
destination as "in"); `flows` keeps one `Flow` per connection: counts and the serving process
from the destination's row, the client process from the source's row. This module does not
evaluate policy; callers ask the engine (`verdict`), the one verdict function.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from microseg.engine import engine as engine_mod
from microseg.errors import ValidationError
from microseg.model import addresses, labels, services, verdicts

EXTERNAL = "external"
"""Name of the peer for addresses that belong to no workload and no IP list."""


class Direction(StrEnum):
    """From the reporter's view."""

    IN = "in"
    OUT = "out"


class PeerKind(StrEnum):
    """What an address resolved to."""

    WORKLOAD = "workload"
    UNMANAGED = "unmanaged"
    IP_LIST = "ipList"
    EXTERNAL = "external"


NO_LABELS = labels.Labels()
"""Labels of peers that are not workloads."""
PROTOCOLS = ("tcp", "udp", "sctp", "icmp", "other")
OUTCOMES = tuple(o.value for o in verdicts.Outcome)


@dataclass(frozen=True)
class Summary:
    """One summary row, typed and checked."""

    bucket: float
    reporter: str
    direction: Direction
    src: addresses.Address
    dst: addresses.Address
    dport: int | None
    proto: str
    process: str | None
    verdict: verdicts.Outcome
    rule: str | None
    first_seen: float
    last_seen: float
    connections: int
    bytes: int
    packets: int


@dataclass(frozen=True, order=True)
class Peer:
    """One end of a flow as the analytics see it: a workload, an IP list, or external."""

    kind: PeerKind
    name: str
    labels: labels.Labels = NO_LABELS

    @property
    def is_workload(self) -> bool:
        """Managed or unmanaged workload (something with labels that selectors can pick)."""
        return self.kind in (PeerKind.WORKLOAD, PeerKind.UNMANAGED)


@dataclass(frozen=True)
class Flow:
    """One connection aggregate (per bucket), after deduplication of the two reports."""

    src: addresses.Address
    dst: addresses.Address
    source: Peer
    destination: Peer
    dport: int | None
    proto: str
    process: str | None
    """The serving process (destination side), when the destination reported it."""
    client_process: str | None
    """The connecting process (source side), when the source reported it."""
    verdict: verdicts.Outcome
    rule: str | None
    first_seen: float
    last_seen: float
    connections: int
    bytes: int
    packets: int
    reporters: tuple[str, ...]

    @property
    def protocol(self) -> services.Protocol:
        """The engine's protocol; "other" only matches services that say `any`."""
        return services.Protocol.ANY if self.proto == "other" else services.Protocol(self.proto)

    @property
    def port_text(self) -> str:
        """`443/tcp`, `icmp`."""
        return f"{self.dport}/{self.proto}" if self.dport is not None else self.proto

    def describe(self) -> str:
        """One line for examples and reasons."""
        return f"{self.source.name} ({self.src}) -> {self.destination.name} ({self.dst}) {self.port_text}"


# -- parsing -----------------------------------------------------------------------------------


def parse(row: Mapping[str, Any]) -> Summary:
    """Check and type one summary row; ValidationError names the bad field."""
    try:
        return Summary(
            bucket=_number(row, "bucket"),
            reporter=_text(row, "reporter"),
            direction=Direction(_choice(row, "direction", tuple(Direction))),
            src=_address(row, "src"),
            dst=_address(row, "dst"),
            dport=_optional_int(row, "dport"),
            proto=_choice(row, "proto", PROTOCOLS),
            process=_optional_text(row, "process"),
            verdict=verdicts.Outcome(_choice(row, "verdict", OUTCOMES)),
            rule=_optional_text(row, "rule"),
            first_seen=_number(row, "firstSeen"),
            last_seen=_number(row, "lastSeen"),
            connections=_count(row, "connections"),
            bytes=_count(row, "bytes"),
            packets=_count(row, "packets"),
        )
    except KeyError as missing:
        raise ValidationError(f"summary row: missing field {missing}", str(missing.args[0])) from None


def _address(row: Mapping[str, Any], key: str) -> addresses.Address:
    text = _text(row, key)
    try:
        return addresses.address(text)
    except ValidationError as bad:
        raise ValidationError(f"summary row: {key}: {bad.message}", key) from None


def _text(row: Mapping[str, Any], key: str) -> str:
    value = row[key]
    if not isinstance(value, str) or not value:
        raise ValidationError(f"summary row: {key} must be a non-empty string, not {value!r}", key)
    return value


def _optional_text(row: Mapping[str, Any], key: str) -> str | None:
    return None if row.get(key) is None else _text(row, key)


def _choice(row: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = _text(row, key)
    if value not in allowed:
        raise ValidationError(f"summary row: {key} {value!r} is not one of {', '.join(allowed)}", key)
    return value


def _number(row: Mapping[str, Any], key: str) -> float:
    value = row[key]
    # bool is an int in Python; a True timestamp is a bug upstream, not a time
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"summary row: {key} must be a number, not {value!r}", key)
    return float(value)


def _count(row: Mapping[str, Any], key: str) -> int:
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"summary row: {key} must be a count (integer >= 0), not {value!r}", key)
    return value


def _optional_int(row: Mapping[str, Any], key: str) -> int | None:
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValidationError(f"summary row: {key} must be a port (0-65535) or null, not {value!r}", key)
    return value


# -- resolving ---------------------------------------------------------------------------------


class PeerResolver:
    """Address -> Peer for one engine, cached (flow sets repeat the same few addresses)."""

    def __init__(self, engine: engine_mod.PolicyEngine) -> None:
        self._engine = engine
        self._lists = [
            (lst.name, lst.networks) for lst in sorted(engine.estate.ip_lists, key=lambda i: i.name)
        ]
        self._cache: dict[addresses.Address, Peer] = {}

    def peer(self, address: addresses.Address) -> Peer:
        """The workload holding `address`, else the first IP list (by name) holding it, else external."""
        found = self._cache.get(address)
        if found is None:
            found = self._cache[address] = self._resolve(address)
        return found

    def _resolve(self, address: addresses.Address) -> Peer:
        name = self._engine.workload_at(address)
        if name is not None:
            managed = self._engine.workload(name).managed
            kind = PeerKind.WORKLOAD if managed else PeerKind.UNMANAGED
            return Peer(kind, name, self._engine.effective_labels(name))
        for list_name, networks in self._lists:
            if addresses.contains(networks, address):
                return Peer(PeerKind.IP_LIST, list_name)
        return Peer(PeerKind.EXTERNAL, EXTERNAL)


# -- deduplication -----------------------------------------------------------------------------

_Key = tuple[float, addresses.Address, addresses.Address, int | None, str]


def flows(rows: Iterable[Mapping[str, Any]], engine: engine_mod.PolicyEngine) -> list[Flow]:
    """Parse, resolve and deduplicate summary rows into flows (in a stable order)."""
    resolver = PeerResolver(engine)
    ins: dict[_Key, list[Summary]] = {}
    outs: dict[_Key, list[Summary]] = {}
    for row in rows:
        summary = parse(row)
        key = (summary.bucket, summary.src, summary.dst, summary.dport, summary.proto)
        (ins if summary.direction is Direction.IN else outs).setdefault(key, []).append(summary)
    result: list[Flow] = []
    for key in sorted(ins.keys() | outs.keys(), key=_sort_key):
        result.extend(_merge(ins.get(key, []), outs.get(key, []), resolver))
    return result


def _sort_key(key: _Key) -> tuple[float, int, int, int, str]:
    bucket, src, dst, dport, proto = key
    return (bucket, int(src), int(dst), -1 if dport is None else dport, proto)


def _merge(ins: list[Summary], outs: list[Summary], resolver: PeerResolver) -> list[Flow]:
    """The destination's rows count; the source's rows only add the client process.

    Without an "in" row (the destination has no agent, or is outside) the "out" rows count.
    """
    if not ins:
        return [_flow(s, resolver, process=None, client=s.process, reporters=(s.reporter,)) for s in outs]
    clients = {s.process for s in outs if s.process is not None}
    # several client processes under one 5-tuple bucket cannot be told apart on the in side
    client = clients.pop() if len(clients) == 1 else None
    out_reporters = tuple(sorted({s.reporter for s in outs}))
    return [
        _flow(s, resolver, process=s.process, client=client, reporters=(s.reporter, *out_reporters))
        for s in ins
    ]


def _flow(
    s: Summary, resolver: PeerResolver, *, process: str | None, client: str | None, reporters: tuple[str, ...]
) -> Flow:
    return Flow(
        src=s.src,
        dst=s.dst,
        source=resolver.peer(s.src),
        destination=resolver.peer(s.dst),
        dport=s.dport,
        proto=s.proto,
        process=process,
        client_process=client,
        verdict=s.verdict,
        rule=s.rule,
        first_seen=s.first_seen,
        last_seen=s.last_seen,
        connections=s.connections,
        bytes=s.bytes,
        packets=s.packets,
        reporters=reporters,
    )


def verdict(flow: Flow, engine: engine_mod.PolicyEngine) -> verdicts.Verdict:
    """What `engine` says about `flow` now (the one verdict function, with both processes)."""
    return engine.evaluate(
        verdicts.Endpoint(flow.src),
        verdicts.Endpoint(flow.dst),
        flow.dport,
        flow.protocol,
        process=flow.process,
        client_process=flow.client_process,
    )


class Judge:
    """One engine's verdicts for many flows, each distinct question asked once: the same connection
    seen in other hours asks the engine exactly the same thing (verdicts are taken "now")."""

    def __init__(self, engine: engine_mod.PolicyEngine) -> None:
        self.engine = engine
        self._memo: dict[tuple[Any, ...], verdicts.Verdict] = {}

    def __call__(self, flow: Flow) -> verdicts.Verdict:
        key = (flow.src, flow.dst, flow.dport, flow.proto, flow.process, flow.client_process)
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = verdict(flow, self.engine)
        return found

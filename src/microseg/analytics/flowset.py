"""Flow sets: summary rows from the flow store, parsed once, resolved to peers and deduplicated.

Fed by the flow store's summary rows (plain mappings of the agreed shape: bucket, reporter,
direction, src, dst, dport, proto, process, verdict, rule, firstSeen, lastSeen, connections, bytes,
packets) and by a PolicyEngine (who owns an address). Feeds the dependency map, the simulator and
the recommender, which all read `Flow` values and never the raw rows.

A connection between two managed workloads is reported by both ends (the source as "out", the
destination as "in"); `flows` keeps one `Flow` per connection: counts and the serving process
from the destination's row, the client process from the source's row. `flow_set` gives the same
flows compactly, each distinct connection once with its hourly buckets as occurrences, so that
the analyses judge and resolve a connection once, not once per hour. This module does not
evaluate policy; callers ask the engine (`verdict`), the one verdict function.

A row that does not check out (an end that is not an IP address, times that are not finite or
out of order: what a server before ingest checked them could store) is skipped and counted
(`FlowSet.skipped`), never fatal: one agent's bad record must not take the analytics away from
everyone. Callers report the count (`skippedRows`).
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Iterable, Iterator, Mapping
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
            last_seen=_seen_last(row),
            connections=_count(row, "connections"),
            bytes=_count(row, "bytes"),
            packets=_count(row, "packets"),
        )
    except KeyError as missing:
        raise ValidationError(f"summary row: missing field {missing}", str(missing.args[0])) from None


def _seen_last(row: Mapping[str, Any]) -> float:
    last = _number(row, "lastSeen")
    if last < _number(row, "firstSeen"):
        raise ValidationError(f"summary row: lastSeen {last} is before firstSeen", "lastSeen")
    return last


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
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError(f"summary row: {key} must be a finite number, not {value!r}", key)
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


# -- reading -----------------------------------------------------------------------------------

_FIELDS = ("bucket", "reporter", "direction", "src", "dst", "dport", "proto", "process", "verdict",
           "rule", "firstSeen", "lastSeen", "connections", "bytes", "packets")  # fmt: skip
(_BUCKET, _REPORTER, _DIRECTION, _SRC, _DST, _DPORT, _PROTO, _PROCESS, _VERDICT,
 _RULE, _FIRST, _LAST, _CONNECTIONS, _BYTES, _PACKETS) = range(len(_FIELDS))  # fmt: skip
_fetch = operator.itemgetter(*_FIELDS)

_Report = tuple[Any, ...]
"""A checked row's values in `_FIELDS` order. A plain tuple of plain values on purpose: a hundred
thousand named tuples or dataclasses cost more to build and to garbage-collect than the rest of
reading the rows."""

_NUMBER, _PORT, _TEXT = (int, float), (int, type(None)), (str, type(None))
_USUAL_TYPES = frozenset(
    (bucket, str, str, str, str, dport, str, process, str, rule, first, last, int, int, int)
    for bucket, first, last in itertools.product(_NUMBER, repeat=3)
    for dport, process, rule in itertools.product(_PORT, _TEXT, _TEXT)
)
"""Field types of the rows `RowReader` checks inline (bool is not int here: `type` is exact)."""
_DIRECTIONS = frozenset(d.value for d in Direction)
_IN = Direction.IN.value
_PROTOCOL_SET = frozenset(PROTOCOLS)
_OUTCOMES_BY_TEXT = {o.value: o for o in verdicts.Outcome}

_Key = tuple[float, int, int, int | None, str]
"""bucket, src and dst (address numbers, see `RowReader`), dport, proto."""


class RowReader:
    """Summary rows to checked reports keyed by (bucket, 5-tuple), each distinct address parsed and
    resolved once.

    A window repeats a few thousand addresses over a hundred thousand rows: parsing `ipaddress`
    values and hashing them (a Python-level hash) per row was a third of an analysis. Addresses get
    small numbers instead; equal addresses written differently share one number. Rows of the usual
    types are checked inline; anything else goes through `parse`, which names the bad field.
    """

    def __init__(self, resolver: PeerResolver) -> None:
        self._resolver = resolver
        self._numbers_by_text: dict[str, int] = {}
        self._numbers: dict[addresses.Address, int] = {}
        self.addresses: list[addresses.Address] = []
        """Address of each number."""
        self.peers: list[Peer] = []
        """Peer of each number."""
        self.skipped = 0
        """Rows `read_all` left out because they do not check out."""

    def read_all(self, rows: Iterable[Mapping[str, Any]]) -> Iterator[tuple[_Key, _Report]]:
        """The key and checked report of each row that checks out; the others are counted in
        `skipped` (the reason is not kept: an operator purges the reporter's rows)."""
        for row in rows:
            try:
                yield self.read(row)
            except ValidationError:
                self.skipped += 1

    def read(self, row: Mapping[str, Any]) -> tuple[_Key, _Report]:
        """The key and checked report of one row; ValidationError names a bad field."""
        return self._quick(row) or self._checked(row)

    def _quick(self, row: Mapping[str, Any]) -> tuple[_Key, _Report] | None:
        """The report when every field is there with its usual type and value and both addresses
        were seen before; None sends the row through `parse`."""
        try:
            r = _fetch(row)
        except KeyError:  # optional fields may be left out: `parse` knows which
            return None
        if tuple(map(type, r)) not in _USUAL_TYPES or not _plausible(r):
            return None
        src, dst = self._numbers_by_text.get(r[_SRC]), self._numbers_by_text.get(r[_DST])
        if src is None or dst is None:
            return None
        return (float(r[_BUCKET]), src, dst, r[_DPORT], r[_PROTO]), r

    def _checked(self, row: Mapping[str, Any]) -> tuple[_Key, _Report]:
        s = parse(row)
        src, dst = self._learn(row["src"], s.src), self._learn(row["dst"], s.dst)
        report = (s.bucket, s.reporter, s.direction.value, row["src"], row["dst"], s.dport, s.proto,
                  s.process, s.verdict.value, s.rule, s.first_seen, s.last_seen, s.connections, s.bytes,
                  s.packets)  # fmt: skip
        return (s.bucket, src, dst, s.dport, s.proto), report

    def _learn(self, text: str, address: addresses.Address) -> int:
        number = self._numbers.get(address)
        if number is None:
            number = self._numbers[address] = len(self.addresses)
            self.addresses.append(address)
            self.peers.append(self._resolver.peer(address))
        self._numbers_by_text[text] = number
        return number


def _plausible(r: _Report) -> bool:
    """The value checks of `parse`, for a report whose types are the usual ones."""
    dport = r[_DPORT]
    return bool(
        r[_REPORTER] and r[_DIRECTION] in _DIRECTIONS and r[_PROTO] in _PROTOCOL_SET
        and -math.inf < r[_FIRST] <= r[_LAST] < math.inf  # also false for NaN
        and r[_VERDICT] in _OUTCOMES_BY_TEXT and r[_PROCESS] != "" and r[_RULE] != ""
        and (dport is None or 0 <= dport <= 65535)
        and r[_CONNECTIONS] >= 0 and r[_BYTES] >= 0 and r[_PACKETS] >= 0
    )  # fmt: skip


# -- deduplication -----------------------------------------------------------------------------

_Merged = tuple[_Report, str | None, str | None, tuple[str, ...]]
"""The report that counts for one flow, its serving process, client process and reporters."""


def flows(rows: Iterable[Mapping[str, Any]], engine: engine_mod.PolicyEngine) -> list[Flow]:
    """Parse, resolve and deduplicate summary rows into flows (in a stable order)."""
    return counted_flows(rows, engine)[0]


def counted_flows(
    rows: Iterable[Mapping[str, Any]], engine: engine_mod.PolicyEngine
) -> tuple[list[Flow], int]:
    """`flows`, and how many rows were skipped because they do not check out."""
    reader = RowReader(PeerResolver(engine))
    found = [_flow(reader, key, merged) for key, merged in _deduplicated(rows, reader)]
    return found, reader.skipped


@dataclass(frozen=True)
class FlowSet:
    """The flows of a window, compactly: each distinct flow once, and the window's flows as
    occurrences of them.

    A distinct flow is one connection (5-tuple, both processes, recorded verdict and rule,
    reporters) with its buckets summed (connections, bytes, packets added, first seen the earliest,
    last seen the latest). Readers that only add flows up (the map) read `distinct`; readers that
    count or list flows one by one (simulate, recommend) walk `occurrences`, in the order of
    `flows`, and judge each distinct flow once: a connection seen every hour of a day is the same
    question 24 times, and its peers are the same too.
    """

    distinct: tuple[Flow, ...]
    occurrences: tuple[tuple[int, int], ...]
    """(index into `distinct`, connections in that bucket) per flow of `flows`."""
    skipped: int = 0
    """Rows left out because they do not check out (see the module docstring)."""

    @property
    def connections(self) -> int:
        """Connections of every flow."""
        return sum(f.connections for f in self.distinct)


def flow_set(rows: Iterable[Mapping[str, Any]], engine: engine_mod.PolicyEngine) -> FlowSet:
    """Parse, resolve and deduplicate summary rows into a `FlowSet` (in a stable order)."""
    reader = RowReader(PeerResolver(engine))
    positions: dict[tuple[Any, ...], int] = {}
    totals: list[_Total] = []
    occurrences: list[tuple[int, int]] = []
    for key, merged in _deduplicated(rows, reader):
        r, process, client, reporters = merged
        # flat, not nested: one tuple to build and hash per group (there are tens of thousands)
        same = (key[1], key[2], key[3], key[4], process, client, r[_VERDICT], r[_RULE], reporters)
        index = positions.get(same)
        if index is None:
            index = positions[same] = len(totals)
            totals.append(_Total(key, merged))
        else:
            totals[index].add(r)
        occurrences.append((index, r[_CONNECTIONS]))
    return FlowSet(tuple(t.flow(reader) for t in totals), tuple(occurrences), reader.skipped)


class _Total:
    """One distinct flow's buckets summed: the first bucket's flow, wider times, added counts."""

    __slots__ = ("bytes", "connections", "first", "key", "last", "merged", "packets")

    def __init__(self, key: _Key, merged: _Merged) -> None:
        self.key, self.merged, r = key, merged, merged[0]
        self.first, self.last = r[_FIRST], r[_LAST]
        self.connections, self.bytes, self.packets = r[_CONNECTIONS], r[_BYTES], r[_PACKETS]

    def add(self, r: _Report) -> None:
        """Count another bucket's report of the same flow."""
        self.first, self.last = min(self.first, r[_FIRST]), max(self.last, r[_LAST])
        self.connections += r[_CONNECTIONS]
        self.bytes += r[_BYTES]
        self.packets += r[_PACKETS]

    def flow(self, reader: RowReader) -> Flow:
        """The summed flow."""
        r, process, client, reporters = self.merged
        summed = (*r[:_FIRST], self.first, self.last, self.connections, self.bytes, self.packets)
        return _flow(reader, self.key, (summed, process, client, reporters))


def _deduplicated(rows: Iterable[Mapping[str, Any]], reader: RowReader) -> Iterator[tuple[_Key, _Merged]]:
    """Rows grouped by (bucket, 5-tuple) and merged, in a stable order."""
    reports: dict[_Key, list[_Report]] = {}
    for key, report in reader.read_all(rows):
        same = reports.get(key)
        if same is None:
            reports[key] = [report]
        else:
            same.append(report)
    order = [int(a) for a in reader.addresses]

    def sort_key(key: _Key) -> tuple[float, int, int, int, str]:
        bucket, src, dst, dport, proto = key
        return (bucket, order[src], order[dst], -1 if dport is None else dport, proto)

    for key in sorted(reports, key=sort_key):
        for merged in _merge(reports[key]):
            yield key, merged


def _merge(reports: list[_Report]) -> list[_Merged]:
    """The destination's rows count; the source's rows only add the client process.

    Without an "in" row (the destination has no agent, or is outside) the "out" rows count.
    """
    if len(reports) <= 2:  # one report, or one from each end: the usual cases, spared the lists
        merged = _merged_pair(reports)
        if merged is not None:
            return merged
    ins: list[_Report] = []
    outs: list[_Report] = []
    for r in reports:
        (ins if r[_DIRECTION] == _IN else outs).append(r)
    if not ins:
        return [(r, None, r[_PROCESS], (r[_REPORTER],)) for r in outs]
    client, out_reporters = _clients(outs)
    return [(r, r[_PROCESS], client, (r[_REPORTER], *out_reporters)) for r in ins]


def _merged_pair(reports: list[_Report]) -> list[_Merged] | None:
    """`_merge` of one report, or of one "in" and one "out" report; None for anything else."""
    first = reports[0]
    if len(reports) == 1:
        if first[_DIRECTION] == _IN:
            return [(first, first[_PROCESS], None, (first[_REPORTER],))]
        return [(first, None, first[_PROCESS], (first[_REPORTER],))]
    second = reports[1]
    if first[_DIRECTION] == second[_DIRECTION]:
        return None
    r, out = (first, second) if first[_DIRECTION] == _IN else (second, first)
    return [(r, r[_PROCESS], out[_PROCESS], (r[_REPORTER], out[_REPORTER]))]


def _clients(outs: list[_Report]) -> tuple[str | None, tuple[str, ...]]:
    """The client process the source side saw (None unless exactly one) and the source reporters."""
    if len(outs) == 1:  # the usual case, spared the sets
        return outs[0][_PROCESS], (outs[0][_REPORTER],)
    clients = {r[_PROCESS] for r in outs if r[_PROCESS] is not None}
    # several client processes under one 5-tuple bucket cannot be told apart on the in side
    client = clients.pop() if len(clients) == 1 else None
    return client, tuple(sorted({r[_REPORTER] for r in outs}))


def _flow(reader: RowReader, key: _Key, merged: _Merged) -> Flow:
    _, src, dst, dport, proto = key
    r, process, client, reporters = merged
    return Flow(
        src=reader.addresses[src],
        dst=reader.addresses[dst],
        source=reader.peers[src],
        destination=reader.peers[dst],
        dport=dport,
        proto=proto,
        process=process,
        client_process=client,
        verdict=_OUTCOMES_BY_TEXT[r[_VERDICT]],
        rule=r[_RULE],
        first_seen=float(r[_FIRST]),
        last_seen=float(r[_LAST]),
        connections=r[_CONNECTIONS],
        bytes=r[_BYTES],
        packets=r[_PACKETS],
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


Question = tuple[addresses.Address, addresses.Address, int | None, str, str | None, str | None]
"""Everything a verdict on a flow depends on: src, dst, dport, proto, process, client process."""


def question(flow: Flow) -> Question:
    """What `verdict` asks the engine about `flow`; flows with equal questions get equal verdicts
    (and resolve to equal peers, which depend on the addresses only)."""
    return (flow.src, flow.dst, flow.dport, flow.proto, flow.process, flow.client_process)


class Judge:
    """One engine's verdicts for many flows, each distinct question asked once: the same connection
    seen in other hours asks the engine exactly the same thing (verdicts are taken "now")."""

    def __init__(self, engine: engine_mod.PolicyEngine) -> None:
        self.engine = engine
        self._memo: dict[Question, verdicts.Verdict] = {}

    def __call__(self, flow: Flow) -> verdicts.Verdict:
        key = question(flow)
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = verdict(flow, self.engine)
        return found

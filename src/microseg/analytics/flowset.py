"""Flow sets: summary rows from the flow store, parsed once, resolved to peers and deduplicated.

Fed by the flow store's summary rows (mappings of the agreed shape: bucket, reporter, direction,
src, dst, dport, proto, process, verdict, rule, firstSeen, lastSeen, connections, bytes, packets;
or, from the store's bulk read, the same values as a plain row in that order) and by a
PolicyEngine (who owns an address). Each row is checked once (`check`, the one validator) into a
typed `Record`. Feeds the dependency map, the simulator and the recommender, which all read `Flow`
values and never the raw rows.

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

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple, TypeGuard, cast

from microseg.analytics import collecting
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


class Flow(NamedTuple):
    """One connection aggregate (per bucket), after deduplication of the two reports.

    A named tuple, not a frozen dataclass: a window makes one per distinct connection (a hundred
    thousand in bench/bench_analytics.py), and a frozen dataclass's __init__ sets each of its 16
    fields through object.__setattr__."""

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


# -- checking ----------------------------------------------------------------------------------


class Record(NamedTuple):
    """One summary row, checked (`check`): plain values, the addresses as stored text.

    A named tuple on purpose: a window holds a million of them, and a tuple is the cheapest object
    to build and to collect; the names keep the code that reads them readable.
    """

    bucket: float
    reporter: str
    direction: str
    src: str
    dst: str
    dport: int | None
    proto: str
    process: str | None
    verdict: str
    rule: str | None
    first_seen: float
    last_seen: float
    connections: int
    bytes: int
    packets: int


FIELDS = (
    "bucket",
    "reporter",
    "direction",
    "src",
    "dst",
    "dport",
    "proto",
    "process",
    "verdict",
    "rule",
    "firstSeen",
    "lastSeen",
    "connections",
    "bytes",
    "packets",
)
"""The agreed row shape's keys, in `Record` order (a stored row may also come as a plain row of
its values in this order: the store's bulk read, which adds one value, the number of stored rows
folded into the row, so that a skipped row counts what it stands for). dport, process and rule may
be left out (null)."""

Row = Mapping[str, Any] | Sequence[Any]
"""A summary row: a mapping of the agreed shape, or a sequence of its values in `FIELDS` order (a
tuple, or a database driver's row)."""

_DIRECTIONS = frozenset(d.value for d in Direction)
_PROTOCOL_SET = frozenset(PROTOCOLS)
_OUTCOMES_BY_TEXT = {o.value: o for o in verdicts.Outcome}
_NUMBER = (int, float)  # exact types: bool is an int in Python, and a True timestamp is a bug upstream
_INF = math.inf
_WANTED = {
    "bucket": "a finite number",
    "reporter": "a non-empty string",
    "direction": f"one of {', '.join(Direction)}",
    "src": "a non-empty string",
    "dst": "a non-empty string",
    "dport": "a port (0-65535) or null",
    "proto": f"one of {', '.join(PROTOCOLS)}",
    "process": "a non-empty string or null",
    "verdict": f"one of {', '.join(OUTCOMES)}",
    "rule": "a non-empty string or null",
    "firstSeen": "a finite number",
    "lastSeen": "a finite number, not before firstSeen",
    **dict.fromkeys(("connections", "bytes", "packets"), "a count (integer >= 0)"),
}
"""What each field must be, for the error that names it."""


def check(row: Row) -> Record:
    """The one check of a summary row: every field of its type and range; ValidationError names the
    first bad field. Addresses are checked for being text here and parsed by the caller (`parse`,
    `RowReader`): a window repeats a few thousand of them over a million rows."""
    values = _values(row)
    bad = _bad_field(values)
    if bad is not None:
        value = values[FIELDS.index(bad)]
        raise ValidationError(f"summary row: {bad} must be {_WANTED[bad]}, not {value!r}", bad)
    if type(values[0]) is float and type(values[10]) is float and type(values[11]) is float:
        return Record._make(values)  # the usual case: the store's REAL columns
    times = tuple(values)
    return Record._make((float(times[0]), *times[1:10], float(times[10]), float(times[11]), *times[12:]))


def _values(row: Row) -> Sequence[Any]:
    """The row's values in `FIELDS` order."""
    if _is_mapping(row):
        return _mapped_values(row)
    values = cast(Sequence[Any], row)
    if len(values) == _FOLDED:
        return values[:-1]
    if len(values) != len(FIELDS):
        raise ValidationError(f"summary row: {len(values)} values, not {len(FIELDS)}", "row")
    return values


_FOLDED = len(FIELDS) + 1
"""Values in a row of the store's bulk read: `FIELDS`, then the stored rows folded into it."""


def stored_rows(row: Row) -> int:
    """How many stored rows `row` stands for: the last value of a folded row (when it is a count),
    else one."""
    if _is_mapping(row):
        return 1
    values = cast(Sequence[Any], row)
    if len(values) == _FOLDED and type(values[-1]) is int and values[-1] > 0:
        return values[-1]
    return 1


def _mapped_values(row: Mapping[str, Any]) -> tuple[Any, ...]:
    try:
        return (
            row["bucket"],
            row["reporter"],
            row["direction"],
            row["src"],
            row["dst"],
            row.get("dport"),
            row["proto"],
            row.get("process"),
            row["verdict"],
            row.get("rule"),
            row["firstSeen"],
            row["lastSeen"],
            row["connections"],
            row["bytes"],
            row["packets"],
        )
    except KeyError as missing:
        raise ValidationError(f"summary row: missing field {missing}", str(missing.args[0])) from None


_MAPPING_BY_TYPE: dict[type, bool] = {dict: True, tuple: False}
"""Whether rows of a type are mappings, learnt per type: `isinstance` against the `Mapping` ABC
costs microseconds for a type that is not one (a driver's row), once per row."""


def _is_mapping(row: Row) -> TypeGuard[Mapping[str, Any]]:
    kind = _MAPPING_BY_TYPE.get(type(row))
    if kind is None:
        kind = _MAPPING_BY_TYPE[type(row)] = isinstance(row, Mapping)
    return kind


def _bad_field(v: Sequence[Any]) -> str | None:
    """The first field of `v` (values in `FIELDS` order) that is not what it must be, or None.

    One straight run of tests (no call per field): this runs once per stored row."""
    (
        bucket,
        reporter,
        direction,
        src,
        dst,
        dport,
        proto,
        process,
        verdict,
        rule,
        first,
        last,
        connections,
        sent,
        packets,
    ) = v
    if type(bucket) not in _NUMBER or not -_INF < bucket < _INF:  # also false for NaN
        return "bucket"
    if type(reporter) is not str or not reporter:
        return "reporter"
    if type(direction) is not str or direction not in _DIRECTIONS:
        return "direction"
    if type(src) is not str or not src:
        return "src"
    if type(dst) is not str or not dst:
        return "dst"
    if dport is not None and (type(dport) is not int or not 0 <= dport <= 65535):
        return "dport"
    if type(proto) is not str or proto not in _PROTOCOL_SET:
        return "proto"
    if process is not None and (type(process) is not str or not process):
        return "process"
    if type(verdict) is not str or verdict not in _OUTCOMES_BY_TEXT:
        return "verdict"
    if rule is not None and (type(rule) is not str or not rule):
        return "rule"
    if type(first) not in _NUMBER or not -_INF < first < _INF:
        return "firstSeen"
    if type(last) not in _NUMBER or not first <= last < _INF:
        return "lastSeen"
    if type(connections) is not int or connections < 0:
        return "connections"
    if type(sent) is not int or sent < 0:
        return "bytes"
    if type(packets) is not int or packets < 0:
        return "packets"
    return None


def parse(row: Row) -> Summary:
    """Check and type one summary row (`check`, then the addresses and enums); ValidationError
    names the bad field."""
    r = check(row)
    return Summary(
        bucket=r.bucket,
        reporter=r.reporter,
        direction=Direction(r.direction),
        src=address_of(r.src, "src"),
        dst=address_of(r.dst, "dst"),
        dport=r.dport,
        proto=r.proto,
        process=r.process,
        verdict=_OUTCOMES_BY_TEXT[r.verdict],
        rule=r.rule,
        first_seen=r.first_seen,
        last_seen=r.last_seen,
        connections=r.connections,
        bytes=r.bytes,
        packets=r.packets,
    )


def address_of(text: str, key: str) -> addresses.Address:
    """A row's address field parsed; ValidationError names `key`."""
    try:
        return addresses.address(text)
    except ValidationError as bad:
        raise ValidationError(f"summary row: {key}: {bad.message}", key) from None


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

_Key = tuple[float, int, int, int | None, str]
"""bucket, src and dst (address numbers, see `RowReader`), dport, proto."""
_IN = Direction.IN.value


class RowReader:
    """Summary rows to checked records keyed by (bucket, 5-tuple), each distinct address parsed and
    resolved once.

    A window repeats a few thousand addresses over a million rows: parsing `ipaddress` values and
    hashing them (a Python-level hash) per row was a third of an analysis. Addresses get small
    numbers instead; equal addresses written differently share one number.
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

    def read_all(self, rows: Iterable[Row]) -> Iterator[tuple[_Key, Record]]:
        """The key and checked record of each row that checks out; the stored rows of the others
        are counted in `skipped` (the reason is not kept: an operator purges the reporter's rows)."""
        for row in rows:
            try:
                yield self.read(row)
            except ValidationError:
                self.skipped += stored_rows(row)

    def read(self, row: Row) -> tuple[_Key, Record]:
        """The key and checked record of one row; ValidationError names a bad field."""
        r = check(row)
        numbers = self._numbers_by_text
        src, dst = numbers.get(r.src), numbers.get(r.dst)
        if src is None:
            src = self._learn(r.src, "src")
        if dst is None:
            dst = self._learn(r.dst, "dst")
        return (r.bucket, src, dst, r.dport, r.proto), r

    def _learn(self, text: str, key: str) -> int:
        address = address_of(text, key)
        number = self._numbers.get(address)
        if number is None:
            number = self._numbers[address] = len(self.addresses)
            self.addresses.append(address)
            self.peers.append(self._resolver.peer(address))
        self._numbers_by_text[text] = number
        return number


# -- deduplication -----------------------------------------------------------------------------


class Merged(NamedTuple):
    """One connection of one bucket after merging its reports (`_merge`)."""

    record: Record
    """The report that counts (the destination's, else the source's)."""
    process: str | None
    """The serving process."""
    client: str | None
    """The connecting process."""
    reporters: tuple[str, ...]


def flows(rows: Iterable[Row], engine: engine_mod.PolicyEngine) -> list[Flow]:
    """Parse, resolve and deduplicate summary rows into flows (in a stable order)."""
    return counted_flows(rows, engine)[0]


@collecting.while_paused
def counted_flows(rows: Iterable[Row], engine: engine_mod.PolicyEngine) -> tuple[list[Flow], int]:
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


@collecting.while_paused
def flow_set(rows: Iterable[Row], engine: engine_mod.PolicyEngine) -> FlowSet:
    """Parse, resolve and deduplicate summary rows into a `FlowSet` (in a stable order)."""
    reader = RowReader(PeerResolver(engine))
    positions: dict[tuple[Any, ...], int] = {}
    totals: list[_Total] = []
    occurrences: list[tuple[int, int]] = []
    for key, merged in _deduplicated(rows, reader):
        r = merged.record
        # flat, not nested: one tuple to build and hash per group (there are tens of thousands)
        same = (
            key[1],
            key[2],
            key[3],
            key[4],
            merged.process,
            merged.client,
            r.verdict,
            r.rule,
            merged.reporters,
        )
        index = positions.get(same)
        if index is None:
            index = positions[same] = len(totals)
            totals.append(_Total(key, merged))
        else:
            totals[index].add(r)
        occurrences.append((index, r.connections))
    return FlowSet(tuple(t.flow(reader) for t in totals), tuple(occurrences), reader.skipped)


class _Total:
    """One distinct flow's buckets summed: the first bucket's flow, wider times, added counts."""

    __slots__ = ("bytes", "connections", "first", "key", "last", "merged", "packets")

    def __init__(self, key: _Key, merged: Merged) -> None:
        self.key, self.merged, r = key, merged, merged.record
        self.first, self.last = r.first_seen, r.last_seen
        self.connections, self.bytes, self.packets = r.connections, r.bytes, r.packets

    def add(self, r: Record) -> None:
        """Count another bucket's report of the same flow."""
        self.first, self.last = min(self.first, r.first_seen), max(self.last, r.last_seen)
        self.connections += r.connections
        self.bytes += r.bytes
        self.packets += r.packets

    def flow(self, reader: RowReader) -> Flow:
        """The summed flow."""
        counts = (self.first, self.last, self.connections, self.bytes, self.packets)
        return _flow(reader, self.key, self.merged, counts)


def _deduplicated(rows: Iterable[Row], reader: RowReader) -> Iterator[tuple[_Key, Merged]]:
    """Rows grouped by (bucket, 5-tuple) and merged, in a stable order."""
    reports: dict[_Key, list[Record]] = {}
    for key, record in reader.read_all(rows):
        same = reports.get(key)
        if same is None:
            reports[key] = [record]
        else:
            same.append(record)
    order = [int(a) for a in reader.addresses]

    def sort_key(key: _Key) -> tuple[float, int, int, int, str]:
        bucket, src, dst, dport, proto = key
        return (bucket, order[src], order[dst], -1 if dport is None else dport, proto)

    for key in sorted(reports, key=sort_key):
        for merged in _merge(reports[key]):
            yield key, merged


def _merge(reports: list[Record]) -> list[Merged]:
    """The destination's rows count; the source's rows only add the client process.

    Without an "in" row (the destination has no agent, or is outside) the "out" rows count.
    """
    if len(reports) <= 2:  # one report, or one from each end: the usual cases, spared the lists
        merged = _merged_pair(reports)
        if merged is not None:
            return merged
    ins: list[Record] = []
    outs: list[Record] = []
    for r in reports:
        (ins if r.direction == _IN else outs).append(r)
    if not ins:
        return [Merged(r, None, r.process, (r.reporter,)) for r in sorted(outs, key=_report_order)]
    client, senders = _clients(outs)
    return [Merged(r, r.process, client, (r.reporter, *senders)) for r in sorted(ins, key=_report_order)]


def _report_order(r: Record) -> tuple[str, str, str, str]:
    """Several reports of one end in one bucket, in an order that does not depend on the order the
    rows came in (the store's bulk read has none)."""
    return (r.reporter, r.process or "", r.verdict, r.rule or "")


def _merged_pair(reports: list[Record]) -> list[Merged] | None:
    """`_merge` of one report, or of one "in" and one "out" report; None for anything else."""
    first = reports[0]
    if len(reports) == 1:
        if first.direction == _IN:
            return [Merged(first, first.process, None, (first.reporter,))]
        return [Merged(first, None, first.process, (first.reporter,))]
    second = reports[1]
    if first.direction == second.direction:
        return None
    r, out = (first, second) if first.direction == _IN else (second, first)
    return [Merged(r, r.process, out.process, (r.reporter, out.reporter))]


def _clients(outs: list[Record]) -> tuple[str | None, tuple[str, ...]]:
    """The client process the source side saw (None unless exactly one) and the source reporters."""
    if len(outs) == 1:  # the usual case, spared the sets
        return outs[0].process, (outs[0].reporter,)
    clients = {r.process for r in outs if r.process is not None}
    # several client processes under one 5-tuple bucket cannot be told apart on the in side
    client = clients.pop() if len(clients) == 1 else None
    return client, tuple(sorted({r.reporter for r in outs}))


_Counts = tuple[float, float, int, int, int]
"""first seen, last seen, connections, bytes, packets."""


def _flow(reader: RowReader, key: _Key, merged: Merged, counts: _Counts | None = None) -> Flow:
    """The flow of one merged report, with `counts` in place of the report's own when given."""
    _, src, dst, dport, proto = key
    r = merged.record
    if counts is None:
        counts = (r.first_seen, r.last_seen, r.connections, r.bytes, r.packets)
    first, last, connections, sent, packets = counts
    return Flow(
        src=reader.addresses[src],
        dst=reader.addresses[dst],
        source=reader.peers[src],
        destination=reader.peers[dst],
        dport=dport,
        proto=proto,
        process=merged.process,
        client_process=merged.client,
        verdict=_OUTCOMES_BY_TEXT[r.verdict],
        rule=r.rule,
        first_seen=first,
        last_seen=last,
        connections=connections,
        bytes=sent,
        packets=packets,
        reporters=merged.reporters,
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
    seen in other hours asks the engine exactly the same thing (verdicts are taken "now").

    Each address is resolved to its workload once (`Endpoint` with the workload named: the
    evaluator then skips its own lookup), and the memo is keyed by the addresses' numbers, not the
    `ipaddress` values (whose hash is computed in Python, twice per question)."""

    def __init__(self, engine: engine_mod.PolicyEngine) -> None:
        self.engine = engine
        self._memo: dict[tuple[Any, ...], verdicts.Verdict] = {}
        self._endpoints: dict[tuple[int, int], verdicts.Endpoint] = {}

    def __call__(self, flow: Flow) -> verdicts.Verdict:
        src, dst = flow.src, flow.dst
        key = (
            src.version,
            int(src),
            dst.version,
            int(dst),
            flow.dport,
            flow.proto,
            flow.process,
            flow.client_process,
        )
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = self.engine.evaluate(
                self._endpoint(src),
                self._endpoint(dst),
                flow.dport,
                flow.protocol,
                process=flow.process,
                client_process=flow.client_process,
            )
        return found

    def _endpoint(self, address: addresses.Address) -> verdicts.Endpoint:
        """The endpoint at `address`, its workload named as the engine knows it (as `evaluate` would
        resolve it)."""
        key = (address.version, int(address))
        found = self._endpoints.get(key)
        if found is None:
            found = self._endpoints[key] = verdicts.Endpoint(address, self.engine.workload_at(address))
        return found

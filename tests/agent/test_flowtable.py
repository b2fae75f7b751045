"""The flow table: what conntrack and NFLOG report becomes the server's flow records.

Most cases feed `CtEvent` / `LoggedPacket` values with an injected clock (no root needed):
direction from the workload's view, the client's port dropped, verdicts (allowed, blocked,
would-block counted once whichever of NEW and the log line comes first), rules from `decide`,
counters from DESTROY events and dumps added once, bounds. The records are checked against the
server's own FlowRecord schema. The last test runs it all for real in two ms- namespaces: real
processes, real nft log rules, the kernel's events, and the records that come out.
"""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from microseg.agent import conntrack, flowtable, netns, nflog, procfs
from microseg.server import models
from tests.agent.test_procfs import CONNECT, SERVE, child, ns_inode
from tests.render import netns as labnet
from tests.render.conftest import require_root_tools

HOST = "10.77.1.2"
PEER = "10.77.1.9"
SERVER = procfs.Process(100, "mysqld", "/usr/sbin/mysqld", "mysql", 27, "/ms-lab/db-1/mysqld")
CLIENT = procfs.Process(200, "curl", "/usr/bin/curl", "app", 1000, None)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def table(clock: Clock) -> flowtable.FlowTable:
    return flowtable.FlowTable(lambda: [HOST, "fd00:77::2"], grace=1.0, clock=clock)


def ct(
    kind: conntrack.Kind, src: str, sport: int | None, dst: str, dport: int | None, at: float,
    *, proto: int = 6, packets: int = 0, size: int = 0,
) -> conntrack.CtEvent:  # fmt: skip
    return conntrack.CtEvent(kind, 6 if ":" in src else 4, proto, src, dst, sport, dport, packets, size, at)


def logged(
    prefix: str, src: str, sport: int, dst: str, dport: int, at: float, length: int = 60
) -> nflog.LoggedPacket:
    return nflog.LoggedPacket(prefix, 4, 6, src, dst, sport, dport, 2, None, at, length)


def valid(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records, after the server accepted them as a batch (its schema forbids unknown keys)."""
    models.FLOW_BATCH.validate_python({"batch_id": "t", "records": records})
    return records


def short(records: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    return {
        (r["direction"], r["src"], r["dst"], r["dport"], r["verdict"], r["rule"], r["process"])
        for r in records
    }


@pytest.mark.parametrize(
    ("src", "dst", "expected"),
    [
        (PEER, HOST, "in"),
        (HOST, PEER, "out"),
        ("fd00:77::9", "fd00:77::2", "in"),
        ("127.0.0.1", "127.0.0.1", None),
        ("::1", "::1", None),
        (HOST, HOST, None),
        (PEER, "10.77.1.10", None),
        ("127.0.0.1", HOST, None),
    ],
    ids=[
        "inbound",
        "outbound",
        "inbound-v6",
        "loopback",
        "loopback-v6",
        "local-to-local",
        "foreign",
        "from-loopback",
    ],
)
def test_direction_is_the_workloads_view(
    table: flowtable.FlowTable, clock: Clock, src: str, dst: str, expected: str | None
) -> None:
    table.on_conntrack(ct("new", src, 40000, dst, 3306, clock.now), SERVER)
    records = valid(table.drain(clock.now + 2))
    assert [r["direction"] for r in records] == ([expected] if expected else [])


def test_a_new_connection_is_final_after_grace_and_allowed(table: flowtable.FlowTable, clock: Clock) -> None:
    table.on_conntrack(ct("new", PEER, 40000, HOST, 3306, clock.now), SERVER)
    assert table.drain(clock.now + 0.5) == []  # a log line may still come
    [record] = valid(table.drain(clock.now + 1.0))
    assert record == {
        "direction": "in", "src": PEER, "dst": HOST, "dport": 3306, "proto": "tcp", "process": "/usr/sbin/mysqld",
        "user": "mysql", "bytes": 0, "packets": 0, "connections": 1, "first_seen": clock.now,
        "last_seen": clock.now,
        "verdict": "allowed", "rule": None,
    }  # fmt: skip
    assert table.drain(clock.now + 5) == []  # counts start again after a drain


def test_the_clients_port_is_dropped_and_counts_add_up(table: flowtable.FlowTable, clock: Clock) -> None:
    for i, sport in enumerate((40001, 40002, 40003)):
        table.on_conntrack(ct("new", HOST, sport, PEER, 443, clock.now + i), CLIENT)
    clock.now += 5
    for sport in (40001, 40002, 40003):
        table.on_conntrack(ct("destroy", HOST, sport, PEER, 443, clock.now, packets=10, size=1000), None)
    [record] = valid(table.drain())
    assert (record["direction"], record["process"], record["user"]) == ("out", "/usr/bin/curl", "app")
    assert (record["packets"], record["bytes"], record["connections"]) == (30, 3000, 3)
    assert (record["first_seen"], record["last_seen"]) == (clock.now - 5, clock.now)


def test_a_process_renamed_by_itself_is_named_by_its_name_else_by_path(
    table: flowtable.FlowTable, clock: Clock
) -> None:
    renamed = procfs.Process(300, "webd", "/usr/bin/python3.11", "www", 33, None)  # prctl(PR_SET_NAME)
    table.on_conntrack(ct("new", PEER, 40000, HOST, 80, clock.now), renamed)
    table.on_conntrack(ct("new", PEER, 40001, HOST, 81, clock.now), None)  # exited before the lookup
    records = valid(table.drain(clock.now + 1))
    assert {(r["dport"], r["process"], r["user"]) for r in records} == {(80, "webd", "www"), (81, None, None)}


@pytest.mark.parametrize("log_first", [False, True], ids=["new-then-log", "log-then-new"])
def test_a_would_block_connection_is_counted_once(
    table: flowtable.FlowTable, clock: Clock, log_first: bool
) -> None:
    new = ct("new", PEER, 40000, HOST, 3306, clock.now)
    line = logged("ms:w:application/db", PEER, 40000, HOST, 3306, clock.now + 0.2, length=60)
    if log_first:
        table.on_log(line)
        table.on_conntrack(new, SERVER)
    else:
        table.on_conntrack(new, SERVER)
        clock.now += 0.2
        table.on_log(line)
    table.on_conntrack(ct("destroy", PEER, 40000, HOST, 3306, clock.now + 1, packets=10, size=900), None)
    [record] = valid(table.drain(clock.now + 3))
    assert (record["verdict"], record["rule"], record["process"]) == (
        "would-block",
        "application/db",
        "/usr/sbin/mysqld",
    )
    assert (record["packets"], record["bytes"]) == (10, 900)  # the logged packet is among conntrack's


def test_a_would_block_line_without_a_connection_still_counts(
    table: flowtable.FlowTable, clock: Clock
) -> None:
    for _ in range(3):  # UDP datagrams before any reply are all "new"
        table.on_log(logged("ms:w:security/udp", PEER, 5353, HOST, 53, clock.now, length=70))
    assert table.drain(clock.now + 0.5) == []
    [record] = valid(table.drain(clock.now + 1))
    assert (record["verdict"], record["rule"], record["packets"], record["bytes"]) == (
        "would-block",
        "security/udp",
        3,
        210,
    )


def test_a_log_line_after_grace_is_reported_as_well(table: flowtable.FlowTable, clock: Clock) -> None:
    table.on_conntrack(ct("new", PEER, 40000, HOST, 3306, clock.now), SERVER)
    clock.now += 2
    table.drain()
    table.on_log(logged("ms:w:application/db", PEER, 40000, HOST, 3306, clock.now))
    [record] = valid(table.drain(clock.now + 2))
    assert (record["verdict"], record["process"]) == ("would-block", "/usr/sbin/mysqld")
    assert table.overflow["late-logs"] == 1


def test_blocked_attempts_count_every_logged_packet(table: flowtable.FlowTable, clock: Clock) -> None:
    for attempt in range(3):  # a SYN and its retransmissions, then another connection
        table.on_log(logged("ms:d:default", PEER, 40000, HOST, 5432, clock.now + attempt, length=60))
    table.on_log(logged("ms:d:default", PEER, 40001, HOST, 5432, clock.now + 5, length=60))
    table.on_log(logged("ms:d:security/no-ssh", HOST, 40002, PEER, 22, clock.now + 5, length=60), CLIENT)
    table.on_log(logged("unrelated prefix", PEER, 40003, HOST, 5432, clock.now + 5))
    records = valid(table.drain(clock.now + 5))  # no grace: conntrack never confirms a dropped packet
    assert short(records) == {
        ("in", PEER, HOST, 5432, "blocked", "default", None),
        ("out", HOST, PEER, 22, "blocked", "security/no-ssh", "/usr/bin/curl"),
    }
    [inbound] = [r for r in records if r["direction"] == "in"]
    assert (inbound["packets"], inbound["bytes"], inbound["first_seen"], inbound["last_seen"]) == (
        4, 240, clock.now, clock.now + 5,
    )  # fmt: skip


def test_rules_of_unlogged_connections_come_from_decide(clock: Clock) -> None:
    asked: list[tuple[str, str, str, str, int | None]] = []

    def decide(direction: str, peer: str, local: str, proto: str, port: int | None) -> tuple[str, str | None]:
        asked.append((direction, peer, local, proto, port))
        return ("allow", "application/web") if port == 443 else ("deny", "default")

    table = flowtable.FlowTable(lambda: [HOST], decide, grace=1.0, clock=clock)
    for sport in (40000, 40001):
        table.on_conntrack(ct("new", PEER, sport, HOST, 443, clock.now), SERVER)
    table.on_conntrack(ct("new", HOST, 40002, PEER, 25, clock.now, proto=17), CLIENT)
    records = valid(table.drain(clock.now + 1))
    assert short(records) == {
        ("in", PEER, HOST, 443, "allowed", "application/web", "/usr/sbin/mysqld"),
        ("out", HOST, PEER, 25, "would-block", "default", "/usr/bin/curl"),  # went through, yet denied
    }
    assert asked == [("in", PEER, HOST, "tcp", 443), ("out", PEER, HOST, "udp", 25)]  # cached per question
    table.on_conntrack(ct("new", PEER, 40003, HOST, 443, clock.now + 2), SERVER)
    table.drain(clock.now + 4)
    assert len(asked) == 3  # the cache lasts one drain: the document may have changed


def test_dumps_add_counter_deltas_once(table: flowtable.FlowTable, clock: Clock) -> None:
    start = clock.now
    table.on_conntrack(ct("new", PEER, 40000, HOST, 3306, start), SERVER)
    totals = []
    for packets in (10, 10, 25):
        clock.now += 10
        table.on_dump([ct("dump", PEER, 40000, HOST, 3306, clock.now, packets=packets, size=packets * 100)])
        totals.append(sum(r["packets"] for r in valid(table.drain())))
    clock.now += 10
    table.on_conntrack(ct("destroy", PEER, 40000, HOST, 3306, clock.now, packets=30, size=3000), None)
    totals.append(sum(r["packets"] for r in valid(table.drain())))
    assert totals == [10, 0, 15, 5]  # 30 in all, none twice; an idle interval reports nothing


def test_a_dump_names_unknown_connections_and_forgets_ended_ones(
    table: flowtable.FlowTable, clock: Clock
) -> None:
    table.on_conntrack(ct("new", PEER, 40000, HOST, 3306, clock.now), SERVER)
    table.drain(clock.now + 1)
    clock.now += 10
    asked: list[int | None] = []

    def owner_of(ev: conntrack.CtEvent) -> procfs.Process | None:
        asked.append(ev.sport)
        return CLIENT

    # 40000 is not in the dump: its DESTROY was lost. 41000 began before the agent.
    table.on_dump([ct("dump", HOST, 41000, PEER, 443, clock.now, packets=4, size=400)], owner_of=owner_of)
    assert asked == [41000]
    [record] = valid(table.drain())
    assert (record["direction"], record["dport"], record["process"], record["packets"]) == (
        "out",
        443,
        "/usr/bin/curl",
        4,
    )
    # a DESTROY for the forgotten connection is a connection of its own now, with all its counters
    table.on_conntrack(ct("destroy", PEER, 40000, HOST, 3306, clock.now, packets=7, size=700), None)
    [again] = valid(table.drain())
    assert (again["dport"], again["packets"], again["process"]) == (3306, 7, None)


def test_counters_that_come_while_a_connection_waits_are_kept(
    table: flowtable.FlowTable, clock: Clock
) -> None:
    table.on_conntrack(ct("new", PEER, 40000, HOST, 3306, clock.now), SERVER)
    table.on_conntrack(ct("destroy", PEER, 40000, HOST, 3306, clock.now + 0.1, packets=3, size=180), None)
    table.on_log(logged("ms:w:application/db", PEER, 40000, HOST, 3306, clock.now + 0.2))
    [record] = valid(table.drain(clock.now + 2))
    assert (record["verdict"], record["packets"], record["bytes"]) == ("would-block", 3, 180)
    table.on_conntrack(ct("dump", PEER, 40000, HOST, 3306, clock.now + 3, packets=3, size=180), None)
    [ghost] = table.drain(clock.now + 4)  # it ended: a later dump line is a new sighting, not a delta
    assert ghost["packets"] == 3


def test_the_table_is_bounded_and_counts_what_it_dropped(clock: Clock) -> None:
    table = flowtable.FlowTable(lambda: [HOST], grace=1.0, clock=clock, max_aggregates=2, max_pending=2)
    for port in (1, 2, 3):
        table.on_conntrack(ct("new", PEER, 40000, HOST, port, clock.now), None)
    assert table.overflow["pending"] == 1  # the oldest was settled early to make room
    records = valid(table.drain(clock.now + 1))
    assert {r["dport"] for r in records} == {1, 2}
    assert table.overflow["aggregates"] == 1


def test_local_addresses_are_reread(clock: Clock) -> None:
    addresses = [HOST]
    table = flowtable.FlowTable(lambda: addresses, grace=1.0, clock=clock)
    addresses = ["10.77.1.3/24"]  # a new address (a prefix length is ignored)
    table.on_conntrack(ct("new", PEER, 40000, "10.77.1.3", 80, clock.now), None)
    clock.now += 1.0  # foreign-looking traffic rereads the addresses at most once a second
    table.on_conntrack(ct("new", PEER, 40001, "10.77.1.3", 81, clock.now), None)
    assert [r["dport"] for r in table.drain(clock.now + 1)] == [81]
    table.on_conntrack(ct("new", PEER, 40002, "10.77.1.3", 82, clock.now), None)
    assert [r["dport"] for r in table.drain(clock.now + 1)] == [82]


# -- end to end --------------------------------------------------------------------------------

GROUP = 12
WORKLOAD = f"""table inet ms_flow_test {{
    chain input {{
        type filter hook input priority 0;
        ct state established,related accept
        tcp dport 7501 accept
        tcp dport 7502 log prefix "ms:w:application/alert" group {GROUP} accept
        tcp dport 7503 log prefix "ms:d:application/deny" group {GROUP} drop
    }}
    chain output {{ type filter hook output priority 0; ct state established,related accept; }}
}}
"""


@pytest.fixture
def lab() -> Iterator[labnet.Lab]:
    require_root_tools("nft", "ip", "nsenter", "conntrack")
    with labnet.lab() as the_lab:
        yield the_lab


class Observer:
    """The agent's observe loop in miniature: conntrack and NFLOG in namespace b into a table."""

    def __init__(self, lab: labnet.Lab) -> None:
        self.lab = lab
        netns.run_in(lab.b, conntrack.enable_accounting)
        self.ct = netns.run_in(lab.b, conntrack.ConntrackListener)
        self.log = netns.run_in(lab.b, lambda: nflog.NflogListener(GROUP))
        self.owners = procfs.OwnerIndex(ns_inode(lab.b))
        self.table = flowtable.FlowTable(lambda: [lab.addr_b], grace=0.3)
        self.events: list[conntrack.CtEvent] = []

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            select.select([self.ct.fileno(), self.log.fileno()], [], [], 0.05)
            events, _lost = self.ct.read()
            self.events += events
            for ev in events:
                self.table.on_conntrack(ev, self.owner(ev) if ev.kind == "new" else None)
            for packet in self.log.read():
                self.table.on_log(packet)

    def owner(self, ev: conntrack.CtEvent) -> procfs.Process | None:
        if ev.dst == self.lab.addr_b:
            return self.owners.lookup(ev.proto, ev.dst, ev.dport or 0, ev.src, ev.sport or 0)
        return self.owners.lookup(ev.proto, ev.src, ev.sport or 0, ev.dst, ev.dport or 0)

    def close(self) -> None:
        self.ct.close()
        self.log.close()


@pytest.mark.netns
def test_records_of_real_connections(lab: labnet.Lab, tmp_path: Path) -> None:
    lab.nft(lab.b, WORKLOAD)
    observer = Observer(lab)
    try:
        with (
            child(lab.b, tmp_path, "ms-web", SERVE, lab.addr_b, "7501", "7502", "7503") as web,
            child(lab.a, tmp_path, "ms-api", SERVE, lab.addr_a, "7601") as api,
        ):
            assert web.line() == api.line() == "ready"
            clients = []
            for port in ("7501", "7501", "7502"):  # two allowed, one would-block
                clients.append(contextlib.ExitStack())
                conn = clients[-1].enter_context(child(lab.a, tmp_path, "ms-cli", CONNECT, lab.addr_b, port))
                conn.line()
            with child(lab.b, tmp_path, "ms-out", CONNECT, lab.addr_a, "7601") as out:
                out.line()
                assert lab.tcp(lab.a, lab.addr_b, 7503, timeout=0.3) == "timeout"
                observer.pump(1.0)
                records = valid(observer.table.drain(time.time() + 1))
            for stack in clients:
                stack.close()
        lab.run(lab.b, "conntrack", "-D", "-p", "tcp")  # DESTROY events with the counters
        observer.pump(0.5)
        counted = valid(observer.table.drain(time.time() + 1))
    finally:
        observer.close()
    assert short(records) == {
        ("in", lab.addr_a, lab.addr_b, 7501, "allowed", None, web.path),
        ("in", lab.addr_a, lab.addr_b, 7502, "would-block", "application/alert", web.path),
        ("in", lab.addr_a, lab.addr_b, 7503, "blocked", "application/deny", None),
        ("out", lab.addr_b, lab.addr_a, 7601, "allowed", None, out.path),
    }
    assert all(r["user"] in ("root", None) for r in records)
    kernel: dict[int | None, int] = {}  # what conntrack counted for each port, over all of its connections
    for ev in observer.events:
        if ev.kind == "destroy":
            kernel[ev.dport] = kernel.get(ev.dport, 0) + ev.packets
    reported: dict[tuple[int | None, str], int] = {}
    for r in records + counted:
        reported[r["dport"], r["verdict"]] = reported.get((r["dport"], r["verdict"]), 0) + r["packets"]
    assert kernel[7501] >= 2 * 6  # two connections: handshake, data, echo, close
    assert reported == {
        (7501, "allowed"): kernel[7501],
        (7502, "would-block"): kernel[7502],  # the logged first packet is not counted twice
        (7503, "blocked"): 1,  # the dropped SYN (no retransmission within 0.3 s)
        (7601, "allowed"): kernel[7601],
    }

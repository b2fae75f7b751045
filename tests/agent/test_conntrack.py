"""The ctnetlink reader against the real kernel in two ms- namespaces: NEW and DESTROY events of
real TCP and UDP connections (original direction, ports, counters on DESTROY once accounting is
on), only the listener's own namespace, full dumps of IPv4 and IPv6 entries, accounting switched
on per namespace, and lost events (ENOBUFS on a tiny buffer) reported instead of raised.

Conntrack only tracks in a namespace where some rule uses it, so each namespace gets a tiny table
(`ct state established,related accept`) first.
"""

from __future__ import annotations

import contextlib
import select
import shutil
import socket
import struct
import time
from collections.abc import Callable, Iterator

import pytest

from microseg.agent import conntrack, netns
from tests.conftest import require
from tests.render import netns as labnet
from tests.render.conftest import require_root_tools

pytestmark = pytest.mark.netns

TRACKING = """table inet ms_ct_test {
    chain input { type filter hook input priority 0; ct state established,related accept; }
    chain output { type filter hook output priority 0; ct state established,related accept; }
}
"""


@pytest.fixture
def lab() -> Iterator[labnet.Lab]:
    require_root_tools("nft", "ip", "nsenter")
    with labnet.lab() as the_lab:
        for ns in (the_lab.a, the_lab.b):
            the_lab.nft(ns, TRACKING)
        yield the_lab


def listener_in(ns: str, rcvbuf: int = 4 << 20) -> conntrack.ConntrackListener:
    return netns.run_in(ns, lambda: conntrack.ConntrackListener(rcvbuf))


def collect(
    listener: conntrack.ConntrackListener, done: Callable[[list[conntrack.CtEvent]], bool], wait: float = 3.0
) -> list[conntrack.CtEvent]:
    """Events read until `done(events)` holds or `wait` seconds pass."""
    events: list[conntrack.CtEvent] = []
    deadline = time.monotonic() + wait
    while not done(events) and time.monotonic() < deadline:
        select.select([listener], [], [], 0.1)
        events += listener.read()[0]
    return events


def of_port(port: int) -> Callable[[conntrack.CtEvent], bool]:
    return lambda ev: ev.dport == port


def test_events_of_a_tcp_connection_in_the_listeners_namespace_only(lab: labnet.Lab) -> None:
    require(shutil.which("conntrack") is not None, "needs the conntrack tool (to end a tracked connection)")
    netns.run_in(lab.b, conntrack.enable_accounting)
    lab.serve(lab.b, lab.addr_b, tcp=(7101,))
    with contextlib.closing(listener_in(lab.b)) as in_b, contextlib.closing(listener_in(lab.a)) as in_a:
        before = time.time()
        with contextlib.closing(lab.connect(lab.a, lab.addr_b, 7101)) as conn:
            assert labnet.echoes(conn)
            sport = conn.getsockname()[1]
        # traffic that stays inside a: its listener sees it, b's must not
        with contextlib.closing(labnet.socket_in(lab.a, socket.AF_INET, socket.SOCK_DGRAM)) as udp:
            udp.sendto(b"x", ("127.0.0.1", 7102))
        seen_b = collect(in_b, lambda evs: any(ev.kind == "new" for ev in evs))
        [new] = [ev for ev in seen_b if ev.kind == "new"]
        assert (new.family, new.proto, new.src, new.sport, new.dst, new.dport) == (
            4, 6, lab.addr_a, sport, lab.addr_b, 7101,
        )  # fmt: skip
        assert (new.packets, new.bytes) == (0, 0)  # NEW events carry no counters
        assert before <= new.at <= time.time()
        lab.run(lab.b, "conntrack", "-D", "-p", "tcp", "--dport", "7101")
        seen_b += collect(in_b, lambda evs: any(ev.kind == "destroy" for ev in evs))
        [gone] = [ev for ev in seen_b if ev.kind == "destroy"]
        assert (gone.src, gone.sport, gone.dport) == (lab.addr_a, sport, 7101)
        assert gone.packets >= 6 and gone.bytes > gone.packets * 40  # handshake, data, echo, close
        assert not any(ev.dport == 7102 for ev in seen_b)
        seen_a = collect(in_a, lambda evs: any(map(of_port(7102), evs)))
        udp_new = [ev for ev in seen_a if ev.dport == 7102]
        assert [(ev.kind, ev.proto, ev.src, ev.dst) for ev in udp_new] == [
            ("new", 17, "127.0.0.1", "127.0.0.1")
        ]


def test_dump_lists_ipv4_and_ipv6_entries_with_counters(lab: labnet.Lab) -> None:
    lab.run(lab.b, "sysctl", "-qw", "net.ipv6.conf.lo.disable_ipv6=0")  # ::1, inside the lab only
    netns.run_in(lab.b, conntrack.enable_accounting)
    lab.serve(lab.b, lab.addr_b, udp=(7201,))
    assert lab.udp(lab.a, lab.addr_b, 7201) == "echo"
    with contextlib.closing(labnet.socket_in(lab.b, socket.AF_INET6, socket.SOCK_DGRAM)) as udp6:
        udp6.sendto(b"over ipv6", ("::1", 7202))
        udp6.sendto(b"over ipv6", ("::1", 7202))
        v6_port = udp6.getsockname()[1]
    before = time.time()
    entries = netns.run_in(lab.b, conntrack.dump)
    assert {ev.kind for ev in entries} == {"dump"}
    assert all(ev.at == entries[0].at >= before for ev in entries)  # stamped with when it was asked
    [v4] = [ev for ev in entries if ev.dport == 7201]
    assert (v4.family, v4.proto, v4.src, v4.dst) == (4, 17, lab.addr_a, lab.addr_b)
    assert (v4.packets, v4.bytes) == (2, 2 * (20 + 8 + len(b"microseg-probe")))  # request and echo
    [v6] = [ev for ev in entries if ev.dport == 7202]
    assert (v6.family, v6.proto, v6.src, v6.dst, v6.sport) == (6, 17, "::1", "::1", v6_port)
    assert v6.packets >= 2  # our two datagrams (and the port-unreachable errors, if counted)
    assert not any(
        ev.dport in (7201, 7202) for ev in netns.run_in(lab.a, conntrack.dump) if ev.dst != lab.addr_b
    )


def test_accounting_is_switched_on_per_namespace(lab: labnet.Lab) -> None:
    def value(ns: str) -> str:
        return lab.run(ns, "sysctl", "-n", "net.netfilter.nf_conntrack_acct").stdout.strip()

    with open("/proc/sys/net/netfilter/nf_conntrack_acct", encoding="ascii") as f:
        root_before = f.read().strip()
    assert value(lab.a) == value(lab.b) == "0"
    netns.run_in(lab.b, conntrack.enable_accounting)
    assert (value(lab.a), value(lab.b)) == ("0", "1")
    with open("/proc/sys/net/netfilter/nf_conntrack_acct", encoding="ascii") as f:
        assert f.read().strip() == root_before


def test_lost_events_are_reported_and_the_listener_keeps_working(lab: labnet.Lab) -> None:
    with contextlib.closing(listener_in(lab.b, rcvbuf=1)) as tiny:  # the kernel's minimum, ~2 KiB
        with contextlib.closing(labnet.socket_in(lab.b, socket.AF_INET, socket.SOCK_DGRAM)) as udp:
            for port in range(7300, 7500):  # 200 new flows, nobody reading
                udp.sendto(b"x", ("127.0.0.1", port))
        events, lost = tiny.read()
        assert lost and len(events) < 200
        assert {ev.dport for ev in events} <= set(range(7300, 7500))
        assert (
            len([ev for ev in netns.run_in(lab.b, conntrack.dump) if 7300 <= (ev.dport or 0) < 7500]) == 200
        )
        with contextlib.closing(labnet.socket_in(lab.b, socket.AF_INET, socket.SOCK_DGRAM)) as udp:
            udp.sendto(b"x", ("127.0.0.1", 7600))
        after = collect(tiny, lambda evs: any(map(of_port(7600), evs)))
        assert [ev.kind for ev in after if ev.dport == 7600] == ["new"]


def test_a_namespace_without_conntrack_rules_reports_nothing(lab: labnet.Lab) -> None:
    lab.run(lab.b, "nft", "delete", "table", "inet", "ms_ct_test")
    with contextlib.closing(listener_in(lab.b)) as quiet:
        with contextlib.closing(labnet.socket_in(lab.b, socket.AF_INET, socket.SOCK_DGRAM)) as udp:
            udp.sendto(b"x", ("127.0.0.1", 7700))
        assert collect(quiet, lambda evs: False, wait=0.3) == []
        assert netns.run_in(lab.b, conntrack.dump) == []


ZONED = """table inet ms_ct_zone {
    chain pre { type filter hook prerouting priority raw; udp dport 7801 ct zone set 7; }
}
"""


def test_entries_outside_the_common_layout_are_parsed_too(lab: labnet.Lab) -> None:
    """The reader reads an IPv4 tuple with ports in one step where the kernel lays it out as usual;
    a zoned entry (a longer tuple), ICMP (no ports) and plain UDP must all come out whole."""
    lab.nft(lab.b, ZONED)
    lab.serve(lab.b, lab.addr_b, udp=(7801, 7802))
    with contextlib.closing(listener_in(lab.b)) as events_b:
        assert lab.udp(lab.a, lab.addr_b, 7801) == "echo"  # zone 7
        assert lab.udp(lab.a, lab.addr_b, 7802) == "echo"  # the default zone
        send_echo_request(lab, lab.addr_b)
        seen = collect(events_b, lambda evs: {7801, 7802} <= {ev.dport for ev in evs} and any(
            ev.proto == 1 for ev in evs))  # fmt: skip
        dumped = netns.run_in(lab.b, conntrack.dump)
    for entries in (seen, dumped):
        by_port = {ev.dport: ev for ev in entries if ev.proto == 17}
        for port in (7801, 7802):
            ev = by_port[port]
            assert (ev.family, ev.src, ev.dst, ev.dport) == (4, lab.addr_a, lab.addr_b, port)
            assert isinstance(ev.sport, int) and ev.sport > 0
        [icmp] = [ev for ev in entries if ev.proto == 1]
        assert (icmp.src, icmp.dst, icmp.sport, icmp.dport) == (lab.addr_a, lab.addr_b, None, None)


def send_echo_request(lab: labnet.Lab, address: str) -> None:
    """One ICMP echo request from namespace a (a raw socket: the lab has no ping)."""
    header = struct.pack("!BBHHH", 8, 0, 0, 0x4D53, 1)
    checksum = sum(struct.unpack("!4H", header))
    checksum = ~((checksum & 0xFFFF) + (checksum >> 16)) & 0xFFFF
    packet = struct.pack("!BBHHH", 8, 0, checksum, 0x4D53, 1)
    with contextlib.closing(
        labnet.socket_in(lab.a, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ) as raw:
        raw.sendto(packet, (address, 0))


def test_loopback_events_can_be_dropped_in_the_kernel(lab: labnet.Lab) -> None:
    """With `skip_loopback` the socket filter drops IPv4 loopback connections' events before they
    are queued; the events of other connections still arrive, whole."""
    lab.serve(lab.b, lab.addr_b, udp=(7901,))
    filtered = netns.run_in(lab.b, lambda: conntrack.ConntrackListener(4 << 20, skip_loopback=True))
    with contextlib.closing(filtered), contextlib.closing(listener_in(lab.b)) as everything:
        with contextlib.closing(labnet.socket_in(lab.b, socket.AF_INET, socket.SOCK_DGRAM)) as udp:
            udp.sendto(b"x", ("127.0.0.1", 7902))  # nobody listens: still a connection to track
            udp.sendto(b"x", ("127.0.0.2", 7903))
        assert lab.udp(lab.a, lab.addr_b, 7901) == "echo"
        seen = collect(filtered, lambda evs: any(map(of_port(7901), evs)))
        unfiltered = collect(everything, lambda evs: {7901, 7902, 7903} <= {ev.dport for ev in evs})
    assert {7902, 7903} <= {ev.dport for ev in unfiltered}  # they did make events
    assert [(ev.kind, ev.src, ev.dst) for ev in seen] == [("new", lab.addr_a, lab.addr_b)]

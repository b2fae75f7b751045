"""The NFLOG reader against real nft log rules in an ms- namespace: packets dropped (`ms:d:`) and
let through (`ms:w:`) arrive with their prefix, addresses, ports, length and interface, within the
configured flush timeout (the kernel's default would hold a lone packet for a second); IPv6 too;
a second listener on the same group is refused with a clear error; and `parse_prefix` reads what
the renderer writes, also when a long reference was cut.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time
from collections.abc import Iterator

import pytest

from microseg import errors
from microseg.agent import netns, nflog
from microseg.render import names
from tests.render import netns as labnet
from tests.render.conftest import require_root_tools

GROUP = 11
RULES = f"""table inet ms_log_test {{
    chain input {{
        type filter hook input priority 0;
        ct state established,related accept
        tcp dport 7401 log prefix "ms:d:application/x" group {GROUP} drop
        tcp dport 7402 log prefix "ms:w:application/y" group {GROUP} accept
        udp dport 7403 log prefix "ms:w:security/udp" group {GROUP} accept
        udp dport 7404 log prefix "other:not-ours" group {GROUP} accept
    }}
}}
"""


@pytest.fixture
def lab() -> Iterator[labnet.Lab]:
    require_root_tools("nft", "ip", "nsenter")
    with labnet.lab() as the_lab:
        the_lab.nft(the_lab.b, RULES)
        yield the_lab


def listener_in(ns: str, group: int = GROUP) -> nflog.NflogListener:
    return netns.run_in(ns, lambda: nflog.NflogListener(group))


def collect(listener: nflog.NflogListener, count: int, wait: float = 3.0) -> list[nflog.LoggedPacket]:
    packets: list[nflog.LoggedPacket] = []
    deadline = time.monotonic() + wait
    while len(packets) < count and time.monotonic() < deadline:
        select.select([listener], [], [], 0.1)
        packets += listener.read()
    return packets


def ifindex(lab: labnet.Lab, ns: str) -> int:
    links = json.loads(lab.run(ns, "ip", "-j", "link", "show").stdout)
    [veth] = [link["ifindex"] for link in links if link["ifname"] != "lo"]
    return int(veth)


def connect_from(lab: labnet.Lab, port: int) -> int:
    """A TCP connection attempt from a to b; the client's port."""
    with contextlib.closing(lab.open_socket(lab.a, socket.SOCK_STREAM)) as s:
        s.settimeout(0.3)
        s.bind((lab.addr_a, 0))
        with contextlib.suppress(OSError):
            s.connect((lab.addr_b, port))
        return int(s.getsockname()[1])


@pytest.mark.netns
def test_logged_packets_carry_prefix_addresses_ports_and_interface(lab: labnet.Lab) -> None:
    lab.serve(lab.b, lab.addr_b, tcp=(7402,), udp=(7403, 7404))
    with contextlib.closing(listener_in(lab.b)) as log:
        dropped = connect_from(lab, 7401)
        passed = connect_from(lab, 7402)
        with contextlib.closing(lab.open_socket(lab.a, socket.SOCK_DGRAM)) as udp:
            udp.bind((lab.addr_a, 0))
            udp.sendto(b"12345678", (lab.addr_b, 7403))
            udp.sendto(b"x", (lab.addr_b, 7404))
            uport = udp.getsockname()[1]
        packets = collect(log, 4)
    index = ifindex(lab, lab.b)
    got = {(p.prefix, p.proto, p.src, p.sport, p.dst, p.dport, p.indev, p.outdev, p.family) for p in packets}
    assert got == {
        ("ms:d:application/x", 6, lab.addr_a, dropped, lab.addr_b, 7401, index, None, 4),
        ("ms:w:application/y", 6, lab.addr_a, passed, lab.addr_b, 7402, index, None, 4),
        ("ms:w:security/udp", 17, lab.addr_a, uport, lab.addr_b, 7403, index, None, 4),
        ("other:not-ours", 17, lab.addr_a, uport, lab.addr_b, 7404, index, None, 4),
    }
    lengths = {p.dport: p.length for p in packets}
    assert lengths[7403] == 20 + 8 + 8 and lengths[7404] == 20 + 8 + 1
    assert lengths[7401] >= 40  # a SYN with options


@pytest.mark.netns
def test_a_lone_packet_arrives_within_the_configured_flush_timeout(lab: labnet.Lab) -> None:
    # The kernel batches up to a second by default; the listener asks for 0.1 s, so one packet
    # must be readable well before the default would release it.
    with contextlib.closing(listener_in(lab.b)) as log:
        sent = time.monotonic()
        with contextlib.closing(lab.open_socket(lab.a, socket.SOCK_DGRAM)) as udp:
            udp.sendto(b"x", (lab.addr_b, 7403))
        ready, _, _ = select.select([log], [], [], 0.7)
        assert ready, "no NFLOG message within 0.7 s"
        assert time.monotonic() - sent < 0.7
        assert [p.dport for p in log.read()] == [7403]


@pytest.mark.netns
def test_ipv6_packets_are_parsed(lab: labnet.Lab) -> None:
    lab.run(lab.b, "sysctl", "-qw", "net.ipv6.conf.lo.disable_ipv6=0")  # ::1, inside the lab only
    with contextlib.closing(listener_in(lab.b)) as log:
        with contextlib.closing(labnet.socket_in(lab.b, socket.AF_INET6, socket.SOCK_DGRAM)) as udp:
            udp.sendto(b"abc", ("::1", 7403))
            sport = udp.getsockname()[1]
        [packet] = collect(log, 1)
    assert (packet.family, packet.proto, packet.src, packet.dst, packet.sport, packet.dport) == (
        6, 17, "::1", "::1", sport, 7403,
    )  # fmt: skip
    assert packet.length == 40 + 8 + 3
    assert packet.prefix == "ms:w:security/udp"


@pytest.mark.netns
def test_a_second_listener_on_the_same_group_is_refused(lab: labnet.Lab) -> None:
    with contextlib.closing(listener_in(lab.b)):
        with pytest.raises(errors.MicrosegError, match=f"NFLOG group {GROUP} is already bound"):
            listener_in(lab.b)
        with contextlib.closing(listener_in(lab.a)):  # the same group in another namespace is fine
            pass
    with contextlib.closing(listener_in(lab.b)):  # closing the first one released the group
        pass


@pytest.mark.netns
def test_lost_messages_are_counted_and_reading_goes_on(lab: labnet.Lab) -> None:
    tiny = netns.run_in(lab.b, lambda: nflog.NflogListener(GROUP, rcvbuf=1, qthresh=1))  # ~2 KiB buffer
    with contextlib.closing(tiny):
        with contextlib.closing(labnet.socket_in(lab.b, socket.AF_INET, socket.SOCK_DGRAM)) as udp:
            for _ in range(200):  # nobody reading
                udp.sendto(b"x", ("127.0.0.1", 7403))
        time.sleep(0.2)
        assert len(tiny.read()) < 200
        assert tiny.lost >= 1
        with contextlib.closing(labnet.socket_in(lab.b, socket.AF_INET, socket.SOCK_DGRAM)) as udp:
            udp.sendto(b"x", ("127.0.0.1", 7403))
        assert [p.dport for p in collect(tiny, 1)] == [7403]


LONG_REF = "application/" + "a-very-long-rule-name-" * 8


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (names.log_prefix("d", "application/x", names.NFT_LOG_PREFIX_MAX), ("blocked", "application/x")),
        (
            names.log_prefix("w", "security/no-8081", names.NFT_LOG_PREFIX_MAX),
            ("would-block", "security/no-8081"),
        ),
        (names.log_prefix("d", "default", names.NFT_LOG_PREFIX_MAX), ("blocked", "default")),
        (names.log_prefix("w", LONG_REF, names.NFT_LOG_PREFIX_MAX), ("would-block", LONG_REF[: 127 - 5])),
        ("ms:d:", ("blocked", "")),
        ("ms-alert r=default ", None),
        ("ms:x:application/x", None),
        ("MS:D:application/x", None),
        ("", None),
    ],
    ids=[
        "drop",
        "would-block",
        "default",
        "cut-at-127",
        "empty-ref",
        "foreign",
        "unknown-kind",
        "case",
        "none",
    ],
)
def test_parse_prefix(prefix: str, expected: tuple[str, str] | None) -> None:
    assert nflog.parse_prefix(prefix) == expected

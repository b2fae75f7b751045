"""A ctnetlink reader: conntrack NEW/DESTROY events and full-table dumps, parsed with `struct`.

Fed by the kernel (a raw `AF_NETLINK` / `NETLINK_NETFILTER` socket in the network namespace of the
thread that opens it); feeds the flow table (`flowtable.FlowTable.on_conntrack`). Stdlib only: the
research notes measured about 6 µs per event this way against 133 µs for pyroute2, and the agent's
budget is a few percent of a core at 500 new connections per second.

Wire format (include/uapi/linux/netfilter/nfnetlink_conntrack.h):

    nlmsghdr(16) nfgenmsg(4: family, version, res_id)  then attributes (len u16, type u16, padded to 4)
      CTA_TUPLE_ORIG(1) { CTA_TUPLE_IP(1) { V4_SRC 1, V4_DST 2, V6_SRC 3, V6_DST 4 }
                          CTA_TUPLE_PROTO(2) { NUM 1 (u8), SRC_PORT 2, DST_PORT 3 (be16) } }
      CTA_COUNTERS_ORIG(9) / CTA_COUNTERS_REPLY(10) { PACKETS 1, BYTES 2 (be64) }

It also deletes entries by their original tuple (`delete`), which is how the agent cuts the
connections of an expired rule (`expiry`).

What it deliberately does not do: decide directions, attribute processes, or remember anything
between reads; counters arrive only with DESTROY events and dumps, and only where accounting is on
(`enable_accounting`). Conntrack itself only runs in a namespace once some rule there uses it.
"""

from __future__ import annotations

import errno
import socket
import struct
import time
from dataclasses import dataclass
from typing import Literal

from microseg import errors
from microseg.agent import netlink
from microseg.agent.netlink import NESTED as _NESTED
from microseg.agent.netlink import NLA as _NLA
from microseg.agent.netlink import NLMSG as _NLMSG
from microseg.agent.netlink import TYPE_MASK as _TYPE_MASK

GROUP_NEW, GROUP_DESTROY = 1, 3
"""NFNLGRP_CONNTRACK_NEW / _DESTROY; bind() takes a bit mask with bit (group - 1)."""

_SUBSYS_CTNETLINK = 1
_MSG_NEW, _MSG_GET, _MSG_DELETE = 0, 1, 2
_BE16 = struct.Struct("!H")
_BE64 = struct.Struct("!Q")

_RECV_BUFFER = 1 << 20
"""Dump replies pack many entries per datagram; events are small. Too small a buffer truncates."""

Kind = Literal["new", "destroy", "dump"]


@dataclass(frozen=True, slots=True)
class CtEvent:
    """One conntrack entry as an event or a dump line, in its original direction.

    `packets` and `bytes` add both directions' counters (0 when accounting is off or the message
    has none, as NEW events never do); ports are None for protocols without them (ICMP, GRE)."""

    kind: Kind
    family: int
    proto: int
    src: str
    dst: str
    sport: int | None
    dport: int | None
    packets: int
    bytes: int
    at: float


class ConntrackListener:
    """NEW and DESTROY events of the network namespace of the thread that constructs it.

    The socket stays in that namespace whichever thread reads it later. `read` never blocks; use
    `fileno` with select/poll to wait."""

    def __init__(self, rcvbuf: int = 32 << 20) -> None:
        groups = (1 << (GROUP_NEW - 1)) | (1 << (GROUP_DESTROY - 1))
        self._sock = netlink.open_socket("conntrack events", rcvbuf, groups)
        self._sock.setblocking(False)
        self._buf = bytearray(_RECV_BUFFER)

    def fileno(self) -> int:
        """The socket, for select/poll."""
        return self._sock.fileno()

    def read(self, max_events: int = 100_000) -> tuple[list[CtEvent], bool]:
        """What has arrived, up to `max_events`; True when the kernel dropped events (ENOBUFS)
        since the last read, after which only a dump tells the truth."""
        events: list[CtEvent] = []
        buf = self._buf
        lost = netlink.drain(
            self._sock,
            buf,
            lambda n: _parse_messages(buf, n, None, time.time(), events),
            lambda: len(events) < max_events,
        )
        return events, lost > 0

    def close(self) -> None:
        """Close the socket (events stop)."""
        self._sock.close()

    def __enter__(self) -> ConntrackListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def dump(timeout: float = 10.0) -> list[CtEvent]:
    """Every conntrack entry (IPv4 and IPv6) of the calling thread's namespace, with counters.

    All entries carry the time the dump was asked for, so a consumer can tell what the dump
    covers (`flowtable.FlowTable.on_dump`)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, netlink.NETLINK_NETFILTER) as sock:
        sock.settimeout(timeout)
        sock.bind((0, 0))
        at = time.time()
        seq = int(at) & 0x7FFFFFFF
        # AF_UNSPEC: ctnetlink filters a dump by family only when one is given, so this is both.
        flags = netlink.NLM_F_REQUEST | netlink.NLM_F_DUMP
        request = _NLMSG.pack(20, (_SUBSYS_CTNETLINK << 8) | _MSG_GET, flags, seq, 0)
        sock.send(request + netlink.NFGEN.pack(socket.AF_UNSPEC, 0, 0))
        return _read_dump(sock, seq, at)


def delete(entries: list[CtEvent], timeout: float = 5.0) -> int:
    """Remove these entries (by original tuple) from the calling thread's namespace; how many were
    there. One that is already gone (the connection closed since the dump) is no error.

    Only entries with ports can be named this way: an ICMP tuple needs its id, type and code, which
    `CtEvent` does not carry."""
    removed = 0
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, netlink.NETLINK_NETFILTER) as sock:
        sock.settimeout(timeout)
        sock.bind((0, 0))
        for seq, entry in enumerate(entries, start=int(time.time()) & 0xFFFFFF):
            sock.send(_delete_request(entry, seq))
            removed += _acknowledged(sock, seq)
    return removed


def _delete_request(entry: CtEvent, seq: int) -> bytes:
    if entry.sport is None or entry.dport is None:
        raise errors.MicrosegError(f"conntrack delete: {entry.src} -> {entry.dst} has no ports")
    family = socket.AF_INET if entry.family == 4 else socket.AF_INET6
    src_attr, dst_attr = (1, 2) if family == socket.AF_INET else (3, 4)  # CTA_IP_V4_* / CTA_IP_V6_*
    src, dst = socket.inet_pton(family, entry.src), socket.inet_pton(family, entry.dst)
    ip = _nla(src_attr, src) + _nla(dst_attr, dst)
    ports = _nla(2, _BE16.pack(entry.sport)) + _nla(3, _BE16.pack(entry.dport))  # CTA_PROTO_*_PORT
    proto = _nla(1, bytes([entry.proto])) + ports
    orig = _nla(1 | _NESTED, _nla(1 | _NESTED, ip) + _nla(2 | _NESTED, proto))  # CTA_TUPLE_ORIG
    body = netlink.NFGEN.pack(family, 0, 0) + orig
    kind = (_SUBSYS_CTNETLINK << 8) | _MSG_DELETE
    return _NLMSG.pack(16 + len(body), kind, netlink.NLM_F_REQUEST | netlink.NLM_F_ACK, seq, 0) + body


_nla = netlink.nla


def _acknowledged(sock: socket.socket, seq: int) -> int:
    """1 when the kernel removed the entry of request `seq`, 0 when it had none."""
    while True:
        try:
            reply = sock.recv(4096)
        except TimeoutError as exc:
            raise errors.TransientError("conntrack delete: no answer from the kernel") from exc
        _length, kind, _flags, got, _pid = _NLMSG.unpack_from(reply, 0)
        if kind != netlink.NLMSG_ERROR or got != seq:
            continue  # an answer to an earlier request that timed out
        code = netlink.error_code(bytearray(reply), 0)
        if code in (0, errno.ENOENT):
            return 1 if code == 0 else 0
        raise errors.TransientError(f"conntrack delete: {errno.errorcode.get(code, code)}")


def _read_dump(sock: socket.socket, seq: int, at: float) -> list[CtEvent]:
    events: list[CtEvent] = []
    buf = bytearray(_RECV_BUFFER)
    while True:
        try:
            n = sock.recv_into(buf)
        except TimeoutError as exc:
            raise errors.TransientError("conntrack dump: no answer from the kernel") from exc
        if _parse_messages(buf, n, seq, at, events):
            return events


def _parse_messages(buf: bytearray, n: int, dump_seq: int | None, at: float, out: list[CtEvent]) -> bool:
    """Append the entries in `buf[:n]` to `out`; True at the end of a dump (NLMSG_DONE).

    Event messages when `dump_seq` is None, else replies to that dump request."""
    for off, length, kind, seq in netlink.messages(buf, n):
        if dump_seq is not None and seq == dump_seq:
            if kind == netlink.NLMSG_DONE:
                return True
            if kind == netlink.NLMSG_ERROR:
                code = netlink.error_code(buf, off)
                if code:
                    raise errors.TransientError(f"conntrack dump: {errno.errorcode.get(code, code)}")
        if kind >> 8 == _SUBSYS_CTNETLINK and length >= 20:
            msg = kind & 0xFF
            event_kind: Kind | None = (
                "dump"
                if dump_seq is not None
                else "new"
                if msg == _MSG_NEW
                else "destroy"
                if msg == _MSG_DELETE
                else None
            )
            if event_kind is not None:
                ev = _entry(buf, off, off + length, event_kind, at)
                if ev is not None:
                    out.append(ev)
    return False


def _entry(buf: bytearray, start: int, end: int, kind: Kind, at: float) -> CtEvent | None:
    """One ctnetlink message; None when it has no usable original tuple."""
    family = buf[start + 16]
    pos = start + 20
    tuple_at = -1
    tuple_end = -1
    packets = nbytes = 0
    while pos + 4 <= end:
        length, attr = _NLA.unpack_from(buf, pos)
        if length < 4:
            break
        attr &= _TYPE_MASK
        if attr == 1:  # CTA_TUPLE_ORIG
            tuple_at, tuple_end = pos + 4, pos + length
            if kind == "new":
                break  # NEW events carry no counters: the rest is not worth walking
        elif attr in (9, 10):  # CTA_COUNTERS_ORIG / _REPLY
            p, b = _counters(buf, pos + 4, pos + length)
            packets += p
            nbytes += b
        pos += (length + 3) & ~3
    if tuple_at < 0:
        return None
    parsed = _tuple(buf, tuple_at, tuple_end)
    if parsed is None:
        return None
    proto, src, dst, sport, dport = parsed
    return CtEvent(
        kind, 4 if family == socket.AF_INET else 6, proto, src, dst, sport, dport, packets, nbytes, at
    )


def _tuple(buf: bytearray, pos: int, end: int) -> tuple[int, str, str, int | None, int | None] | None:
    src = dst = ""
    proto = -1
    sport = dport = None
    while pos + 4 <= end:
        length, attr = _NLA.unpack_from(buf, pos)
        if length < 4:
            break
        attr &= _TYPE_MASK
        if attr == 1:  # CTA_TUPLE_IP
            src, dst = _addresses(buf, pos + 4, pos + length)
        elif attr == 2:  # CTA_TUPLE_PROTO
            proto, sport, dport = _proto(buf, pos + 4, pos + length)
        pos += (length + 3) & ~3
    if not src or proto < 0:
        return None
    return proto, src, dst, sport, dport


def _addresses(buf: bytearray, pos: int, end: int) -> tuple[str, str]:
    src = dst = ""
    while pos + 4 <= end:
        length, attr = _NLA.unpack_from(buf, pos)
        if length < 4:
            break
        attr &= _TYPE_MASK
        if attr in (1, 2) and length == 8:  # CTA_IP_V4_SRC / _DST
            text = socket.inet_ntop(socket.AF_INET, buf[pos + 4 : pos + 8])
        elif attr in (3, 4) and length == 20:  # CTA_IP_V6_SRC / _DST
            text = socket.inet_ntop(socket.AF_INET6, buf[pos + 4 : pos + 20])
        else:
            text = ""
        if attr in (1, 3):
            src = text
        elif attr in (2, 4):
            dst = text
        pos += (length + 3) & ~3
    return src, dst


def _proto(buf: bytearray, pos: int, end: int) -> tuple[int, int | None, int | None]:
    proto = -1
    sport = dport = None
    while pos + 4 <= end:
        length, attr = _NLA.unpack_from(buf, pos)
        if length < 4:
            break
        attr &= _TYPE_MASK
        if attr == 1:  # CTA_PROTO_NUM
            proto = buf[pos + 4]
        elif attr == 2:  # CTA_PROTO_SRC_PORT
            sport = _BE16.unpack_from(buf, pos + 4)[0]
        elif attr == 3:  # CTA_PROTO_DST_PORT
            dport = _BE16.unpack_from(buf, pos + 4)[0]
        pos += (length + 3) & ~3
    return proto, sport, dport


def _counters(buf: bytearray, pos: int, end: int) -> tuple[int, int]:
    packets = nbytes = 0
    while pos + 4 <= end:
        length, attr = _NLA.unpack_from(buf, pos)
        if length < 4:
            break
        attr &= _TYPE_MASK
        if attr == 1 and length == 12:  # CTA_COUNTERS_PACKETS
            packets = _BE64.unpack_from(buf, pos + 4)[0]
        elif attr == 2 and length == 12:  # CTA_COUNTERS_BYTES
            nbytes = _BE64.unpack_from(buf, pos + 4)[0]
        pos += (length + 3) & ~3
    return packets, nbytes


def enable_accounting() -> None:
    """Turn on per-connection byte/packet counters (`nf_conntrack_acct`) in the calling thread's
    network namespace; the setting is per namespace and applies to connections made afterwards."""
    try:
        with open("/proc/sys/net/netfilter/nf_conntrack_acct", "w", encoding="ascii") as f:
            f.write("1\n")
    except OSError as exc:
        raise errors.MicrosegError(f"cannot enable conntrack accounting: {exc.strerror}") from exc

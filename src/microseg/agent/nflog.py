"""An NFLOG reader: the packets our nft rules log (`log prefix "ms:d:<ref>" group G`), parsed with
`struct` from a raw netlink socket.

Fed by the kernel (nfnetlink_log, one group in the network namespace of the thread that opens the
listener); feeds the flow table (`flowtable.FlowTable.on_log`), which turns `ms:d:` (dropped in
enforce mode) and `ms:w:` (would-block in alert mode) into verdicts. The renderer writes those
prefixes (`render.names.log_prefix`, at most 127 characters, so long references arrive cut).

Wire format (include/uapi/linux/netfilter/nfnetlink_log.h): configuration messages of type
NFULNL_MSG_CONFIG carry NFULA_CFG_CMD (bind), NFULA_CFG_MODE (copy the first bytes of each packet),
NFULA_CFG_QTHRESH and NFULA_CFG_TIMEOUT (the kernel batches packets until either is reached);
packets arrive as NFULNL_MSG_PACKET with NFULA_PREFIX, NFULA_PAYLOAD (the IP header onwards) and
the interface indexes.

What it deliberately does not do: interpret prefixes beyond `parse_prefix`, or track connections.
Only one socket per namespace may bind a group (a second gets EPERM, e.g. while ulogd2 runs).
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
from microseg.agent.netlink import NLA as _NLA
from microseg.agent.netlink import TYPE_MASK as _TYPE_MASK

_SUBSYS_ULOG = 4
_MSG_PACKET, _MSG_CONFIG = 0, 1
_CFG_CMD, _CFG_MODE, _CFG_TIMEOUT, _CFG_QTHRESH = 1, 2, 4, 5
_CMD_BIND = 1
_COPY_PACKET = 2
_ATTR_INDEV, _ATTR_OUTDEV, _ATTR_PAYLOAD, _ATTR_PREFIX = 4, 5, 9, 10

COPY_RANGE = 128
"""Bytes of each packet copied to us: an IPv4 header with options (60) or an IPv6 header with a
few extension headers, plus the ports."""

_BE16 = struct.Struct("!H")
_BE32 = struct.Struct("!I")
_PORTS = struct.Struct("!HH")
_MODE = struct.Struct("!IBB")

_PORTED = frozenset({6, 17, 33, 132, 136})
"""TCP, UDP, DCCP, SCTP and UDP-Lite start with source and destination ports."""
_IPV6_EXTENSIONS = frozenset({0, 43, 60})
"""Hop-by-hop, routing and destination options: length in 8-byte units after the first 8."""
_IPV6_FRAGMENT, _IPV6_AH = 44, 51

_PREFIX_VERDICTS: dict[str, Literal["blocked", "would-block"]] = {"ms:d:": "blocked", "ms:w:": "would-block"}


@dataclass(frozen=True, slots=True)
class LoggedPacket:
    """One logged packet: the prefix of the rule that logged it and the packet's addresses.

    `length` is the IP packet's length from its header (0 when the header was cut); ports are None
    for protocols without them and for non-first fragments."""

    prefix: str
    family: int
    proto: int
    src: str
    dst: str
    sport: int | None
    dport: int | None
    indev: int | None
    outdev: int | None
    at: float
    length: int = 0


def parse_prefix(prefix: str) -> tuple[Literal["blocked", "would-block"], str] | None:
    """("blocked", ref) for `ms:d:<ref>`, ("would-block", ref) for `ms:w:<ref>`, None for prefixes
    that are not ours. The reference is as the renderer wrote it: made safe for nft quoting and
    possibly cut at 127 characters (`render.names.log_prefix`)."""
    verdict = _PREFIX_VERDICTS.get(prefix[:5])
    if verdict is None:
        return None
    return verdict, prefix[5:]


class NflogListener:
    """The packets logged to `group` in the network namespace of the thread constructing it.

    Messages arrive in batches of up to `qthresh` packets or after `timeout` seconds, whichever
    comes first. `read` never blocks; `lost` counts the times the kernel dropped messages because
    the socket buffer was full (ENOBUFS)."""

    def __init__(self, group: int, rcvbuf: int = 16 << 20, qthresh: int = 64, timeout: float = 0.1) -> None:
        self.group = group
        self.lost = 0
        self._seq = 0
        self._early: list[LoggedPacket] = []
        self._buf = bytearray(1 << 18)
        self._sock = netlink.open_socket(f"NFLOG group {group}", rcvbuf)
        try:
            self._sock.settimeout(5.0)
            self._configure(
                _nla(_CFG_CMD, bytes([_CMD_BIND])),
                _nla(_CFG_MODE, _MODE.pack(COPY_RANGE, _COPY_PACKET, 0)),
                _nla(_CFG_QTHRESH, _BE32.pack(qthresh)),
                _nla(_CFG_TIMEOUT, _BE32.pack(max(1, round(timeout * 100)))),  # centiseconds
            )
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise

    def _configure(self, *attrs: bytes) -> None:
        """Send one config message and wait for its acknowledgement; packets that arrive before
        it (possible once bound) are kept for the next `read`."""
        self._seq += 1
        body = netlink.NFGEN.pack(socket.AF_UNSPEC, 0, socket.htons(self.group)) + b"".join(attrs)
        flags = netlink.NLM_F_REQUEST | netlink.NLM_F_ACK
        header = netlink.NLMSG.pack(16 + len(body), (_SUBSYS_ULOG << 8) | _MSG_CONFIG, flags, self._seq, 0)
        try:
            self._sock.send(header + body)
            while True:
                n = self._sock.recv_into(self._buf)
                code = _parse(self._buf, n, self._seq, time.time(), self._early)
                if code is not None:
                    break
        except OSError as exc:
            raise errors.MicrosegError(f"NFLOG group {self.group}: {exc.strerror or exc}") from exc
        if code == errno.EPERM:
            raise errors.MicrosegError(
                f"NFLOG group {self.group} is already bound by another listener in this network namespace "
                "(another agent, or ulogd2?); configure a different log group"
            )
        if code:
            raise errors.MicrosegError(f"NFLOG group {self.group}: {errno.errorcode.get(code, code)}")

    def fileno(self) -> int:
        """The socket, for select/poll."""
        return self._sock.fileno()

    def read(self, max_packets: int = 100_000) -> list[LoggedPacket]:
        """The packets that have arrived, up to about `max_packets`."""
        out, self._early = self._early, []
        buf = self._buf
        self.lost += netlink.drain(
            self._sock, buf, lambda n: _parse(buf, n, None, time.time(), out), lambda: len(out) < max_packets
        )
        return out

    def close(self) -> None:
        """Close the socket; the kernel unbinds the group with it."""
        self._sock.close()

    def __enter__(self) -> NflogListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_nla = netlink.nla


def _parse(buf: bytearray, n: int, ack_seq: int | None, at: float, out: list[LoggedPacket]) -> int | None:
    """Append the packets in `buf[:n]` to `out`; the errno of the acknowledgement of `ack_seq`
    (0 for success) when it is among the messages, else None."""
    result = None
    for off, length, kind, seq in netlink.messages(buf, n):
        if kind == netlink.NLMSG_ERROR and ack_seq is not None and seq == ack_seq:
            result = netlink.error_code(buf, off)
        elif kind == (_SUBSYS_ULOG << 8) | _MSG_PACKET and length >= 20:
            packet = _packet(buf, off + 20, off + length, at)
            if packet is not None:
                out.append(packet)
    return result


def _packet(buf: bytearray, pos: int, end: int, at: float) -> LoggedPacket | None:
    prefix = ""
    indev = outdev = None
    payload = (0, 0)
    while pos + 4 <= end:
        length, attr = _NLA.unpack_from(buf, pos)
        if length < 4:
            break
        attr &= _TYPE_MASK
        if attr == _ATTR_PREFIX:
            raw = bytes(buf[pos + 4 : pos + length])
            prefix = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
        elif attr == _ATTR_PAYLOAD:
            payload = (pos + 4, pos + length)
        elif attr == _ATTR_INDEV and length == 8:
            indev = _BE32.unpack_from(buf, pos + 4)[0]
        elif attr == _ATTR_OUTDEV and length == 8:
            outdev = _BE32.unpack_from(buf, pos + 4)[0]
        pos += (length + 3) & ~3
    header = _ip(buf, *payload)
    if header is None:
        return None
    family, proto, src, dst, sport, dport, total = header
    return LoggedPacket(prefix, family, proto, src, dst, sport, dport, indev, outdev, at, total)


_IpHeader = tuple[int, int, str, str, int | None, int | None, int]


def _ip(buf: bytearray, start: int, end: int) -> _IpHeader | None:
    """Family, protocol, addresses, ports and length of the IP packet in `buf[start:end]`."""
    if end - start < 20:
        return None
    version = buf[start] >> 4
    if version == 4:
        return _ipv4(buf, start, end)
    if version == 6 and end - start >= 40:
        return _ipv6(buf, start, end)
    return None


def _ipv4(buf: bytearray, start: int, end: int) -> _IpHeader:
    ihl = (buf[start] & 0x0F) * 4
    total = _BE16.unpack_from(buf, start + 2)[0]
    proto = buf[start + 9]
    src = socket.inet_ntop(socket.AF_INET, buf[start + 12 : start + 16])
    dst = socket.inet_ntop(socket.AF_INET, buf[start + 16 : start + 20])
    first_fragment = _BE16.unpack_from(buf, start + 6)[0] & 0x1FFF == 0
    sport, dport = _ports(buf, start + ihl, end) if proto in _PORTED and first_fragment else (None, None)
    return 4, proto, src, dst, sport, dport, total


def _ipv6(buf: bytearray, start: int, end: int) -> _IpHeader:
    total = 40 + _BE16.unpack_from(buf, start + 4)[0]
    src = socket.inet_ntop(socket.AF_INET6, buf[start + 8 : start + 24])
    dst = socket.inet_ntop(socket.AF_INET6, buf[start + 24 : start + 40])
    proto = buf[start + 6]
    pos = start + 40
    first_fragment = True
    # Walk the extension headers to the transport header (it holds the ports).
    while pos + 8 <= end:
        if proto in _IPV6_EXTENSIONS:
            proto, pos = buf[pos], pos + (buf[pos + 1] + 1) * 8
        elif proto == _IPV6_FRAGMENT:
            first_fragment = _BE16.unpack_from(buf, pos + 2)[0] & 0xFFF8 == 0
            proto, pos = buf[pos], pos + 8
        elif proto == _IPV6_AH:
            proto, pos = buf[pos], pos + (buf[pos + 1] + 2) * 4
        else:
            break
    sport, dport = _ports(buf, pos, end) if proto in _PORTED and first_fragment else (None, None)
    return 6, proto, src, dst, sport, dport, total


def _ports(buf: bytearray, pos: int, end: int) -> tuple[int | None, int | None]:
    if pos + 4 > end:
        return None, None
    sport, dport = _PORTS.unpack_from(buf, pos)
    return sport, dport

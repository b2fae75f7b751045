"""What the two netfilter netlink readers (`conntrack`, `nflog`) share: the socket, the header
layouts, attribute packing, the walk over the messages of one datagram and the non-blocking
receive loop (`nflog`'s; conntrack's event reader has its own copy, with a one-event fast path).

Each reader keeps its own attribute walkers inline: they run for every connection and every logged
packet, and a generator per attribute would cost the agent a measurable share of its budget
(issue 17). Only what runs once per datagram or per message is shared here.

Wire format: nlmsghdr(16: length u32, type u16, flags u16, seq u32, pid u32), then for netfilter a
nfgenmsg(4: family, version, res_id), then attributes (length u16, type u16, padded to 4).
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable, Iterator

from microseg import errors

NETLINK_NETFILTER = 12
SO_RCVBUFFORCE = 33
"""Unlike SO_RCVBUF it is not capped by net.core.rmem_max (needs CAP_NET_ADMIN)."""

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NESTED = 0x8000
"""NLA_F_NESTED, set on nested attributes as libnetfilter_conntrack does."""
TYPE_MASK = 0x3FFF
"""Attribute type without NLA_F_NESTED / NLA_F_NET_BYTEORDER."""

NLMSG = struct.Struct("=IHHII")
NLA = struct.Struct("=HH")
NFGEN = struct.Struct("=BBH")
ERRNO = struct.Struct("=i")


def nla(kind: int, payload: bytes) -> bytes:
    """One attribute, padded to 4 bytes."""
    return NLA.pack(4 + len(payload), kind) + payload + b"\0" * (-len(payload) % 4)


def open_socket(what: str, rcvbuf: int, groups: int = 0) -> socket.socket:
    """A NETLINK_NETFILTER socket in the calling thread's network namespace, bound to the multicast
    `groups` (a bit mask), with a receive buffer the kernel's rmem_max does not cap."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        sock.bind((0, groups))
    except OSError as exc:
        sock.close()
        raise errors.MicrosegError(f"{what}: {exc.strerror or exc}") from exc
    return sock


def messages(buf: bytearray, n: int) -> Iterator[tuple[int, int, int, int]]:
    """(offset, length, type, seq) of each whole message in `buf[:n]`; a cut one ends the walk."""
    off = 0
    while off + 16 <= n:
        length, kind, _flags, seq, _pid = NLMSG.unpack_from(buf, off)
        if length < 16 or off + length > n:
            return
        yield off, length, kind, seq
        off += (length + 3) & ~3


def error_code(buf: bytes | bytearray, off: int) -> int:
    """The positive errno of the NLMSG_ERROR message at `off` (0 for an acknowledgement)."""
    return int(-ERRNO.unpack_from(buf, off + 16)[0])


def drain(
    sock: socket.socket, buf: bytearray, parse: Callable[[int], object], more: Callable[[], bool]
) -> int:
    """Hand each waiting datagram's length to `parse` (its bytes are in `buf`) while `more()` holds
    and the non-blocking socket has data; how many times the kernel dropped messages (ENOBUFS)
    meanwhile. The socket stays usable after ENOBUFS: later messages still arrive."""
    lost = 0
    while more():
        try:
            n = sock.recv_into(buf)
        except BlockingIOError:
            break
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
            lost += 1
            continue
        parse(n)
    return lost

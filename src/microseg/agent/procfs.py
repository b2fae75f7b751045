"""Sockets and the processes that own them, per network namespace, from the kernel and /proc.

Fed by the kernel's socket tables of one network namespace, joined on the socket inode with the
`/proc/<pid>/fd/*` links (`socket:[INODE]`) of the processes in that namespace, and
comm/exe/status/cgroup for each owner. Feeds the agent's inventory (listening processes), its
process knowledge for the renderer (cgroups), and the flow table (`OwnerIndex`: who made or served
a connection).

The tables come from a NETLINK_SOCK_DIAG dump (what `ss` uses) made in the namespace, with
`/proc/<pid>/net/{tcp,tcp6,udp,udp6}` as the fallback: reading /proc/net/tcp walks the whole TCP
hash table in the kernel and took 5-12 ms here for 15 sockets, the dump 0.4 ms. Why not psutil: it
reads the caller's /proc/net, so it sees no socket of another namespace (the research notes found
0 of 1,001). The fd walk grows with the number of open fds of the namespace's processes, so
`OwnerIndex` rescans only on a miss and at most every `min_rescan` seconds, never per event.

What it deliberately does not do: follow sockets held by processes of another namespace (they are
reported without a process), or remember processes between scans (pids are reused).
"""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from microseg import errors
from microseg.agent import netns

Proto = Literal["tcp", "udp"]

_TCP_STATES = {
    1: "established",
    2: "syn-sent",
    3: "syn-recv",
    4: "fin-wait1",
    5: "fin-wait2",
    6: "time-wait",
    7: "close",
    8: "close-wait",
    9: "last-ack",
    10: "listen",
    11: "closing",
    12: "new-syn-recv",
}
_UDP_UNCONNECTED = 7
"""A bound, unconnected UDP socket shows TCP_CLOSE; we call it `listen` (it receives from anyone)."""

_TABLES: tuple[tuple[str, Proto, int], ...] = (
    ("tcp", "tcp", 4),
    ("tcp6", "tcp", 6),
    ("udp", "udp", 4),
    ("udp6", "udp", 6),
)
_NATIVE_WORD = struct.Struct("=I")
_NATIVE_WORDS = struct.Struct("=IIII")
_PRINTED_WORDS = struct.Struct(">IIII")
_MAPPED = "::ffff:"

NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_PROTO_NUMBERS: dict[Proto, int] = {"tcp": 6, "udp": 17}
_NLMSG = struct.Struct("=IHHII")
_ERRNO = struct.Struct("=i")
_DIAG_REQ = struct.Struct("=BBBBI")
"""inet_diag_req_v2 up to the socket id: family, protocol, extensions, pad, state mask."""
_DIAG_MSG = struct.Struct("=BB2xHH16s16s24xII")
"""inet_diag_msg: family, state, (timer, retrans), ports (network order), addresses, (interface,
cookie, expires, queues), uid, inode."""
_WILDCARD = {4: "0.0.0.0", 6: "::"}


@dataclass(frozen=True, slots=True)
class Process:
    """A process as /proc shows it now. `path` is None for kernel threads and when the executable
    cannot be read; `cgroup` is the cgroup v2 path (`0::` line), None without cgroup v2."""

    pid: int
    name: str
    path: str | None
    user: str
    uid: int
    cgroup: str | None

    @property
    def label(self) -> str:
        """How flows and the inventory name the process: the executable's path when it is the
        program the process says it is (so rules naming either the name or the path match, the
        engine comparing base names), else the name it gave itself (an interpreter running a
        service under another name, which only the name tells apart)."""
        if self.path and os.path.basename(self.path)[:15] == self.name:
            return self.path
        return self.name


@dataclass(frozen=True, slots=True)
class Socket:
    """One TCP or UDP socket. Addresses are in `socket.inet_ntop` form, IPv4-mapped IPv6 addresses
    as plain IPv4 (that is how conntrack names the connection); `process` is None when no process
    of the namespace holds it (TIME_WAIT, kernel sockets, a holder in another namespace)."""

    proto: Proto
    family: int
    local: str
    lport: int
    remote: str
    rport: int
    state: str
    inode: int
    process: Process | None


def sockets(netns_inode: int | None = None) -> list[Socket]:
    """The TCP and UDP sockets of a network namespace (default: the calling thread's)."""
    target = netns.current_thread_inode() if netns_inode is None else netns_inode
    pids = pids_in(target)
    return _joined(_table(target, pids), _socket_owners(pids))


def listening(netns_inode: int | None = None) -> list[Socket]:
    """Listening TCP sockets and bound, unconnected UDP sockets (state `listen`)."""
    return [s for s in sockets(netns_inode) if s.state == "listen"]


def processes(netns_inode: int | None = None) -> list[Process]:
    """The processes of a network namespace (default: the calling thread's) that still exist."""
    target = netns.current_thread_inode() if netns_inode is None else netns_inode
    return [p for p in map(process, pids_in(target)) if p is not None]


def pids_in(netns_inode: int) -> list[int]:
    """Pids (thread-group leaders) whose network namespace is `netns_inode`, ascending."""
    out = []
    for pid in _pids():
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == netns_inode:
                out.append(pid)
        except OSError:
            continue  # gone, or a kernel thread we may not inspect
    return out


def process(pid: int) -> Process | None:
    """What /proc says about `pid`; None when it has exited."""
    base = f"/proc/{pid}"
    try:
        with open(f"{base}/comm", encoding="utf-8", errors="replace") as f:
            name = f.read().rstrip("\n")
        uid = _effective_uid(base)
    except OSError:
        return None
    return Process(pid, name, _exe(base), _user(uid), uid, _cgroup(base))


def cgroup2_mount() -> str:
    """Where cgroup v2 is mounted relative to /sys/fs/cgroup: "" on unified hosts, e.g. "unified"
    on hybrid ones; "" too when there is no cgroup v2 mount under /sys/fs/cgroup."""
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        mounts = [_mount_point(line) for line in f]
    found = sorted(m for m in mounts if m is not None)
    for mount in found:
        if mount == "/sys/fs/cgroup" or mount.startswith("/sys/fs/cgroup/"):
            return mount[len("/sys/fs/cgroup") :].strip("/")
    return ""


class OwnerIndex:
    """Which local process holds a connection, from periodic scans of one namespace.

    `lookup` tries the connected socket (the client of an outbound connection, or the worker that
    accepted an inbound one), then the listening socket on the local address and port, then a
    wildcard listener. On a miss it rescans, at most every `min_rescan` seconds, so a burst of new
    connections costs one scan. Callers doing many lookups at once should do them together, right
    after the connections are seen: a process that has already exited is not found (None). Hits
    are not re-checked: a socket that has gone stays in the index until the next rescan."""

    def __init__(
        self,
        netns_inode: int | None = None,
        min_rescan: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.netns_inode = netns.current_thread_inode() if netns_inode is None else netns_inode
        self.min_rescan = min_rescan
        self.scans = 0
        self._clock = clock
        self._scanned = float("-inf")
        self._connected: dict[tuple[str, str, int, str, int], Process] = {}
        self._listening: dict[tuple[str, str, int], Process] = {}
        self._by_peer: dict[tuple[str, str, int], Process] = {}
        """The process last seen connected to each remote (address, port): a short-lived outbound
        connection is often closed before a scan can see its socket, and the client talking to a
        given service rarely changes, so it names such a connection (best effort)."""

    def lookup(
        self, proto: str | int, local: str, lport: int, remote: str, rport: int, *, guess: bool = True
    ) -> Process | None:
        """The process on the local end of a TCP/UDP connection (`proto` "tcp"/"udp" or 6/17); with
        `guess`, when its socket is not (or no longer) there, the process last seen connected to the
        same remote service."""
        name = _PROTO_NAMES.get(proto)
        if name is None:
            return None
        found = self._find(name, local, lport, remote, rport)
        if found is None and self._clock() - self._scanned >= self.min_rescan:
            self.refresh()
            found = self._find(name, local, lport, remote, rport)
        if found is None and guess:
            return self._by_peer.get((name, remote, rport))
        return found

    def can_rescan(self) -> bool:
        """Whether a lookup that misses now would rescan (else it answers from the last scan)."""
        return self._clock() - self._scanned >= self.min_rescan

    def refresh(self) -> None:
        """Rescan the namespace now."""
        connected: dict[tuple[str, str, int, str, int], Process] = {}
        listening: dict[tuple[str, str, int], Process] = {}
        for s in sockets(self.netns_inode):
            if s.process is None:
                continue
            if s.state == "listen":
                listening.setdefault((s.proto, s.local, s.lport), s.process)
            elif s.rport:
                connected.setdefault((s.proto, s.local, s.lport, s.remote, s.rport), s.process)
        for (proto, local, lport, remote, rport), owner in connected.items():
            if (proto, local, lport) not in listening and not _serving(listening, proto, local, lport):
                self._by_peer[(proto, remote, rport)] = owner
        if len(self._by_peer) > 65536:  # bounded: forget the oldest guesses
            for key in list(self._by_peer)[: len(self._by_peer) - 65536]:
                del self._by_peer[key]
        self._connected, self._listening = connected, listening
        self._scanned = self._clock()
        self.scans += 1

    def _find(self, proto: str, local: str, lport: int, remote: str, rport: int) -> Process | None:
        found = self._connected.get((proto, local, lport, remote, rport))
        if found is not None:
            return found
        listening = self._listening
        found = listening.get((proto, local, lport))
        if found is None:
            v4 = ":" not in local
            found = listening.get((proto, _WILDCARD[4 if v4 else 6], lport))
            if found is None and v4:
                found = listening.get((proto, "::", lport))  # a dual-stack listener takes IPv4 too
        return found


def _serving(listening: dict[tuple[str, str, int], Process], proto: str, local: str, lport: int) -> bool:
    """Whether (local, lport) is a listening socket's, by address or wildcard: the accepted side."""
    wildcard = _WILDCARD[6 if ":" in local else 4]
    return (proto, wildcard, lport) in listening or (proto, "::", lport) in listening


_PROTO_NAMES: dict[str | int, str] = {"tcp": "tcp", "udp": "udp", 6: "tcp", 17: "udp"}

_Row = tuple[Proto, int, str, int, str, int, str, int]


def _joined(rows: Iterable[_Row], owners: dict[int, int]) -> list[Socket]:
    """Sockets with their owners; each owner read once per scan."""
    found: dict[int, Process | None] = {}
    out = []
    for proto, family, local, lport, remote, rport, state, inode in rows:
        pid = owners.get(inode)
        if pid is not None and pid not in found:
            found[pid] = process(pid)
        owner = found.get(pid) if pid is not None else None
        out.append(Socket(proto, family, local, lport, remote, rport, state, inode, owner))
    return out


def _table(target: int, pids: list[int]) -> list[_Row]:
    """The socket tables of namespace `target`: sock_diag from a socket opened in it (by a
    short-lived thread when it is not the caller's), the /proc files where that fails."""
    here = target == netns.current_thread_inode()
    if not here and not pids:
        return []
    net = "/proc/thread-self/net" if here else f"/proc/{pids[0]}/net"
    diag: socket.socket | None
    try:
        diag = _diag_socket() if here else netns.run_in(f"/proc/{pids[0]}/ns/net", _diag_socket)
    except (OSError, errors.MicrosegError):
        diag = None
    rows: list[_Row] = []
    try:
        for table, proto, family in _TABLES:
            got = None
            if diag is not None:
                with contextlib.suppress(OSError):  # e.g. udp_diag missing: that table from /proc
                    got = _diag_rows(diag, proto, family)
            rows += _file_rows(f"{net}/{table}", proto, family) if got is None else got
    finally:
        if diag is not None:
            diag.close()
    return rows


def _diag_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    sock.settimeout(5.0)
    return sock


def _diag_rows(sock: socket.socket, proto: Proto, family: int) -> list[_Row]:
    """One SOCK_DIAG_BY_FAMILY dump (all states) of TCP or UDP sockets of one family."""
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    body = _DIAG_REQ.pack(af, _PROTO_NUMBERS[proto], 0, 0, 0xFFFFFFFF) + bytes(48)
    sock.send(_NLMSG.pack(16 + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0) + body)
    buf = bytearray(1 << 16)
    rows: list[_Row] = []
    while True:
        n = sock.recv_into(buf)
        off = 0
        while off + 16 <= n:
            length, kind = _NLMSG.unpack_from(buf, off)[:2]
            if length < 16:
                break
            if kind == _NLMSG_DONE:
                return rows
            if kind == _NLMSG_ERROR:
                code = -_ERRNO.unpack_from(buf, off + 16)[0]
                raise OSError(code, f"sock_diag: {os.strerror(code)}")
            if kind == _SOCK_DIAG_BY_FAMILY and length >= 16 + _DIAG_MSG.size:
                rows.append(_diag_row(buf, off + 16, proto, family))
            off += (length + 3) & ~3


def _diag_row(buf: bytearray, off: int, proto: Proto, family: int) -> _Row:
    _af, code, sport, dport, src, dst, _uid, inode = _DIAG_MSG.unpack_from(buf, off)
    lport, rport = socket.ntohs(sport), socket.ntohs(dport)
    if family == 4:
        local, remote = socket.inet_ntop(socket.AF_INET, src[:4]), socket.inet_ntop(socket.AF_INET, dst[:4])
    else:
        local, remote = (
            _unmapped(socket.inet_ntop(socket.AF_INET6, src)),
            _unmapped(socket.inet_ntop(socket.AF_INET6, dst)),
        )
    return proto, family, local, lport, remote, rport, _state(proto, code, rport), inode


def _file_rows(path: str, proto: Proto, family: int) -> list[_Row]:
    """The lines of one /proc/<pid>/net table (empty when it does not exist, e.g. no IPv6)."""
    try:
        with open(path, encoding="ascii") as f:
            lines = f.readlines()[1:]
    except OSError:
        return []
    rows: list[_Row] = []
    for line in lines:
        fields = line.split()
        if len(fields) < 10:
            continue
        local, lport = _endpoint(fields[1], family)
        remote, rport = _endpoint(fields[2], family)
        rows.append(
            (
                proto,
                family,
                local,
                lport,
                remote,
                rport,
                _state(proto, int(fields[3], 16), rport),
                int(fields[9]),
            )
        )
    return rows


def _state(proto: Proto, code: int, rport: int) -> str:
    if proto == "udp":
        return "listen" if code == _UDP_UNCONNECTED and not rport else "established"
    return _TCP_STATES.get(code, str(code))


def _unmapped(address: str) -> str:
    """`::ffff:10.0.0.1` -> `10.0.0.1`: conntrack names IPv4 connections of IPv6 sockets so."""
    return address[len(_MAPPED) :] if address.startswith(_MAPPED) and "." in address else address


def _endpoint(text: str, family: int) -> tuple[str, int]:
    """`0100007F:1F90` -> ("127.0.0.1", 8080). The kernel prints the address as 32-bit words in
    host byte order (so reversed on little-endian machines) and the port as plain hex."""
    address, port = text.split(":")
    if family == 4:
        return socket.inet_ntop(socket.AF_INET, _NATIVE_WORD.pack(int(address, 16))), int(port, 16)
    words = _PRINTED_WORDS.unpack(bytes.fromhex(address))
    return _unmapped(socket.inet_ntop(socket.AF_INET6, _NATIVE_WORDS.pack(*words))), int(port, 16)


def _pids() -> list[int]:
    return sorted(int(name) for name in os.listdir("/proc") if name.isdigit())


def _socket_owners(pids: Iterable[int]) -> dict[int, int]:
    """Socket inode -> the lowest pid holding it (forked servers share listening sockets)."""
    owners: dict[int, int] = {}
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue  # closed while we looked
            if link.startswith("socket:["):
                owners.setdefault(int(link[8:-1]), pid)
    return owners


def _effective_uid(base: str) -> int:
    with open(f"{base}/status", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[2])
    raise OSError(f"{base}/status has no Uid line")


def _exe(base: str) -> str | None:
    """The executable's path as text. A path is bytes, and one that is not UTF-8 (an intruder may
    name a binary so) comes back from `readlink` with lone surrogates, which the server refuses:
    one such record would cost the whole flow batch, so the bad bytes become U+FFFD here."""
    try:
        raw = os.readlink(os.fsencode(f"{base}/exe"))
    except OSError:
        return None
    return raw.decode("utf-8", "replace").removesuffix(" (deleted)")


def _cgroup(base: str) -> str | None:
    try:
        with open(f"{base}/cgroup", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].rstrip("\n")
    except OSError:
        pass
    return None


@functools.lru_cache(maxsize=1024)
def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _mount_point(line: str) -> str | None:
    """The mount point of a cgroup2 line of /proc/self/mountinfo, else None."""
    head, sep, tail = line.partition(" - ")
    if not sep or not tail.startswith("cgroup2 "):
        return None
    fields = head.split()
    return fields[4].replace("\\040", " ") if len(fields) > 4 else None

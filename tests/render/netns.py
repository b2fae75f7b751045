"""A two-namespace lab for real data-plane tests, and the probes that exercise it.

    ns ms-<tag>-a  [ms-<tag>a 10.77.250.1/24] <--veth--> [ms-<tag>b 10.77.250.2/24]  ns ms-<tag>-b

Safety, enforced here rather than trusted to callers: every namespace and interface name starts with
`ms-`, addresses are inside 10.77.0.0/16, IPv6 is switched off inside the lab (no link-local
addresses), the veth is created inside a lab namespace (it never exists in the root namespace), and
nft / iptables / ipset only ever run inside a lab namespace (`nsenter --net`, which keeps /sys and
cgroup paths, unlike `ip netns exec`). `lab()` deletes both namespaces in `finally`, also when a test
fails. Traffic is a bounded number of probes with short timeouts, only between the two lab addresses.

Sockets are made inside a namespace by a short-lived thread that calls setns(2) and exits, so the
test process itself never leaves the root namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import re
import secrets
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

PREFIX = "ms-"
LAB_NET = ipaddress.ip_network("10.77.0.0/16")
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _check_name(name: str) -> str:
    if not name.startswith(PREFIX) or len(name) > 15:
        raise AssertionError(f"lab names must start with {PREFIX} and fit an interface name: {name!r}")
    return name


def _check_address(address: str) -> str:
    if ipaddress.ip_interface(address).ip not in LAB_NET:
        raise AssertionError(f"lab addresses must be inside {LAB_NET}: {address}")
    return address


def run(*cmd: str, text_in: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command with a timeout; on failure the error carries stderr."""
    done = subprocess.run(cmd, input=text_in, capture_output=True, text=True, timeout=20, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


_CGROUPV2 = re.compile(r'socket cgroupv2 level [0-9]+ "([^"]*)"')


def nft_dry_run(text: str) -> None:
    """`nft -c -f -`: the kernel validates the batch and nothing changes. nft resolves cgroupv2 paths
    under /sys/fs/cgroup while parsing, so scripts with such matches are checked in a private mount
    namespace where a tmpfs holds those directories (the host's cgroup tree is not touched)."""
    paths = _CGROUPV2.findall(text)
    if not paths:
        run("nft", "-c", "-f", "-", text_in=text)
        return
    dirs = " ".join(f"'/sys/fs/cgroup/{p}'" for p in paths)
    script = f"mount -t tmpfs ms-cgroup /sys/fs/cgroup && mkdir -p {dirs} && nft -c -f -"
    run("unshare", "--mount", "--propagation", "private", "sh", "-c", script, text_in=text)


@dataclass
class Lab:
    """Two namespaces: `a` (10.77.250.1) and `b` (10.77.250.2)."""

    a: str
    b: str
    addr_a: str = "10.77.250.1"
    addr_b: str = "10.77.250.2"
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def run(
        self, ns: str, *cmd: str, text_in: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run `cmd` inside lab namespace `ns` (never anywhere else)."""
        if ns not in (self.a, self.b):
            raise AssertionError(f"{ns} is not a namespace of this lab")
        return run("nsenter", f"--net=/run/netns/{ns}", *cmd, text_in=text_in, check=check)

    def nft(self, ns: str, script: str) -> None:
        """Load an nft script in `ns` (one transaction)."""
        self.run(ns, "nft", "-f", "-", text_in=script)

    def counters(self, ns: str) -> dict[str, int]:
        """Packets counted per rule comment in our table (summed over rules with one comment)."""
        listing = json.loads(self.run(ns, "nft", "-j", "list", "table", "inet", "microseg").stdout)
        out: dict[str, int] = {}
        for item in listing["nftables"]:
            rule = item.get("rule")
            if rule and "comment" in rule:
                packets = sum(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
                out[rule["comment"]] = out.get(rule["comment"], 0) + packets
        return out

    def open_socket(self, ns: str, kind: int, family: int = socket.AF_INET, proto: int = 0) -> socket.socket:
        """A socket living in namespace `ns`."""
        if ns not in (self.a, self.b):
            raise AssertionError(f"{ns} is not a namespace of this lab")
        return socket_in(ns, family, kind, proto)

    def serve(self, ns: str, address: str, tcp: tuple[int, ...] = (), udp: tuple[int, ...] = ()) -> None:
        """TCP and UDP echo servers on `address` in `ns`, stopped when the lab closes."""
        _check_address(address)
        stop = threading.Event()
        listeners: list[socket.socket] = []
        for port in tcp:
            s = self.open_socket(ns, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((address, port))
            s.listen(64)
            listeners.append(s)
        datagrams = []
        for port in udp:
            s = self.open_socket(ns, socket.SOCK_DGRAM)
            s.bind((address, port))
            datagrams.append(s)
        thread = threading.Thread(target=_echo, args=(listeners, datagrams, stop), daemon=True)
        thread.start()

        def close() -> None:
            stop.set()
            thread.join(timeout=2)
            for s in (*listeners, *datagrams):
                s.close()

        self._closers.append(close)

    def connect(self, ns: str, address: str, port: int, timeout: float = 0.5) -> socket.socket:
        """An open TCP connection from `ns` (raises when it cannot be made)."""
        s = self.open_socket(ns, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect((_check_address(address), port))
        return s

    def tcp(self, ns: str, address: str, port: int, timeout: float = 0.5) -> str:
        """`open`, `refused` or `timeout` for one TCP connection attempt from `ns`."""
        with contextlib.closing(self.open_socket(ns, socket.SOCK_STREAM)) as s:
            s.settimeout(timeout)
            try:
                s.connect((_check_address(address), port))
            except TimeoutError:
                return "timeout"
            except ConnectionRefusedError:
                return "refused"
            except PermissionError:
                return "eperm"  # dropped by our own output chain
            return "open" if echoes(s) else "no-echo"

    def udp(self, ns: str, address: str, port: int, timeout: float = 0.5) -> str:
        """`echo` when a datagram to the port comes back, else `timeout`."""
        with contextlib.closing(self.open_socket(ns, socket.SOCK_DGRAM)) as s:
            s.settimeout(timeout)
            try:
                s.sendto(b"microseg-probe", (_check_address(address), port))
                s.recvfrom(64)
            except PermissionError:
                return "eperm"  # dropped by our own output chain
            except TimeoutError:
                return "timeout"
            except ConnectionRefusedError:
                return "refused"
            return "echo"

    def probe(self, ns: str, address: str, probes: dict[str, str]) -> dict[str, str]:
        """Run probes like {"tcp/8080": ..., "udp/9090": ...} in parallel; their outcomes by key."""

        def one(key: str) -> str:
            proto, port = key.split("/")
            return self.tcp(ns, address, int(port)) if proto == "tcp" else self.udp(ns, address, int(port))

        with ThreadPoolExecutor(max_workers=8) as pool:
            return dict(zip(probes, pool.map(one, probes), strict=True))

    def close(self) -> None:
        """Stop servers; the namespaces are removed by `lab()`."""
        while self._closers:
            self._closers.pop()()


def socket_in(ns: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """Create a socket inside /run/netns/`ns` from a throw-away thread (setns is per thread)."""
    box: dict[str, object] = {}
    path = f"/run/netns/{_check_name(ns)}"

    def work() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:  # this thread only; it ends right after
                    raise OSError(ctypes.get_errno(), "setns failed")
                box["sock"] = socket.socket(family, kind, proto)
            finally:
                os.close(fd)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    sock = box["sock"]
    assert isinstance(sock, socket.socket)
    return sock


def echoes(conn: socket.socket) -> bool:
    """Whether a message sent on an open TCP connection comes back."""
    try:
        conn.sendall(b"microseg-probe")
        return conn.recv(64) == b"microseg-probe"
    except OSError:
        return False


def _echo(listeners: list[socket.socket], datagrams: list[socket.socket], stop: threading.Event) -> None:
    """Accepts connections and echoes what arrives on them and on the datagram sockets."""
    conns: list[socket.socket] = []
    try:
        while not stop.is_set():
            ready, _, _ = select.select([*listeners, *datagrams, *conns], [], [], 0.05)
            for s in ready:
                try:
                    if s in listeners:
                        conns.append(s.accept()[0])
                    elif s in datagrams:
                        data, peer = s.recvfrom(2048)
                        s.sendto(data, peer)
                    elif data := s.recv(2048):
                        s.sendall(data)
                    else:
                        raise ConnectionResetError
                except OSError:
                    if s in conns:
                        conns.remove(s)
                        s.close()
    finally:
        for c in conns:
            c.close()


@contextlib.contextmanager
def lab() -> Iterator[Lab]:
    """Create the two namespaces and the veth between them; remove everything afterwards."""
    tag = secrets.token_hex(3)
    a, b = _check_name(f"ms-{tag}-a"), _check_name(f"ms-{tag}-b")
    if_a, if_b = _check_name(f"ms-{tag}a"), _check_name(f"ms-{tag}b")
    created: list[str] = []
    the_lab = Lab(a, b)
    try:
        for ns in (a, b):
            run("ip", "netns", "add", ns)
            created.append(ns)
            for key in ("all", "default"):
                the_lab.run(ns, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")
            run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", a, "link", "add", if_a, "type", "veth", "peer", "name", if_b, "netns", b)
        for ns, ifname, address in ((a, if_a, the_lab.addr_a), (b, if_b, the_lab.addr_b)):
            run("ip", "-n", ns, "addr", "add", _check_address(f"{address}/24"), "dev", ifname)
            run("ip", "-n", ns, "link", "set", ifname, "up")
        yield the_lab
    finally:
        the_lab.close()
        for ns in reversed(created):
            run("ip", "netns", "del", ns, check=False)


class NflogReader:
    """Receives NFLOG messages of one group inside a lab namespace and returns their prefixes.

    Netlink wire format as in the research notes (dependencies.md section 4): bind the group, copy
    no packet payload, and flush each message at once (queue threshold 1) so tests do not wait.
    """

    def __init__(self, the_lab: Lab, ns: str, group: int) -> None:
        self.sock = the_lab.open_socket(ns, socket.SOCK_RAW, socket.AF_NETLINK, 12)  # NETLINK_NETFILTER
        self.sock.bind((0, 0))
        self.group = group
        self._config([_nla(1, b"\x01\0\0\0")], 1)  # NFULA_CFG_CMD: BIND
        self._config(
            [_nla(2, struct.pack("!IBB", 0, 1, 0)), _nla(5, struct.pack("!I", 1))], 2
        )  # META, QTHRESH

    def _config(self, attrs: list[bytes], seq: int) -> None:
        body = struct.pack("=BBH", 0, 0, socket.htons(self.group)) + b"".join(attrs)
        self.sock.send(struct.pack("=IHHII", 16 + len(body), (4 << 8) | 1, 0x1 | 0x4, seq, 0) + body)
        reply = self.sock.recv(4096)
        _, kind, _, _, _, error = struct.unpack_from("=IHHIIi", reply)
        if kind == 2 and error != 0:  # NLMSG_ERROR
            raise OSError(-error, "NFLOG config failed")

    def prefixes(self, wait: float = 1.0) -> list[str]:
        """Prefixes received until nothing arrives for `wait` seconds."""
        out: list[str] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.sock], [], [], wait)
            if not ready:
                break
            out += _parse_prefixes(self.sock.recv(65536))
        return out

    def close(self) -> None:
        """Close the netlink socket."""
        self.sock.close()

    def __enter__(self) -> NflogReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _nla(kind: int, payload: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(payload), kind) + payload + b"\0" * (-len(payload) % 4)


def _parse_prefixes(data: bytes) -> list[str]:
    out = []
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16:
            break
        if kind == (4 << 8):  # NFULNL_MSG_PACKET
            pos = offset + 20  # nlmsghdr + nfgenmsg
            while pos + 4 <= offset + length:
                alen, atype = struct.unpack_from("=HH", data, pos)
                if alen < 4:
                    break
                if atype & 0x7FFF == 10:  # NFULA_PREFIX
                    out.append(data[pos + 4 : pos + alen].rstrip(b"\0").decode())
                pos += (alen + 3) & ~3
        offset += (length + 3) & ~3
    return out

"""Socket owners from /proc in other network namespaces: real processes with names of their own
(copies of the interpreter, so comm and exe differ per role) serve and connect between two ms-
namespaces, and `procfs` must name them from the root namespace, from inside, and through
`OwnerIndex` (connected socket first, then the listener, rescans rate-limited, exited processes
gone). Also cgroup v2 paths and where cgroup2 is mounted.

`Child` and `child` are used by the flow table's end-to-end test as well.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from microseg.agent import netns, procfs
from tests.conftest import require, require_root
from tests.render import netns as labnet
from tests.render.conftest import require_root_tools

SERVE = r"""
import select, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
tcp = socket.socket(family, socket.SOCK_STREAM)
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind((host, port))
tcp.listen(16)
ports = [tcp]
for extra in sys.argv[3:]:
    more = socket.socket(family, socket.SOCK_STREAM)
    more.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    more.bind((host, int(extra)))
    more.listen(16)
    ports.append(more)
udp = socket.socket(family, socket.SOCK_DGRAM)
udp.bind((host, port))
print("ready", flush=True)
conns = []
while True:
    ready, _, _ = select.select([*ports, udp, sys.stdin, *conns], [], [], 10)
    if sys.stdin in ready or not ready:
        break
    for s in ready:
        if s in ports:
            conns.append(s.accept()[0])
        elif s is udp:
            data, peer = udp.recvfrom(2048)
            udp.sendto(data, peer)
        else:
            data = s.recv(2048)
            if data:
                s.sendall(data)
            else:
                conns.remove(s)
                s.close()
"""

CONNECT = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
s.sendall(b"probe")
s.recv(16)
print(s.getsockname()[1], flush=True)
sys.stdin.read()
"""


@dataclass
class Child:
    """A process running a script in a lab namespace under an executable name of its own."""

    popen: subprocess.Popen[str]
    path: str
    name: str

    @property
    def pid(self) -> int:
        return self.popen.pid

    def line(self) -> str:
        """The next line the script prints (it says when it is ready)."""
        assert self.popen.stdout is not None
        text = self.popen.stdout.readline().strip()
        if not text:
            raise AssertionError(
                f"{self.name} ended: {self.popen.stderr.read() if self.popen.stderr else ''}"
            )
        return text


@contextlib.contextmanager
def child(ns: str, directory: Path, name: str, script: str, *args: str) -> Iterator[Child]:
    """Run `script` in `ns` as a copy of the interpreter called `name` (so /proc shows `name` as
    comm and the copy as exe); stopped and reaped afterwards whatever happens."""
    exe = directory / name
    if not exe.exists():
        shutil.copy2(os.path.realpath(sys.executable), exe)
    env = {"PYTHONHOME": sys.base_prefix, "PATH": "/usr/bin:/bin"}
    command = ["nsenter", f"--net=/run/netns/{ns}", str(exe), "-c", script, *args]
    popen = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        yield Child(popen, str(exe), name)
    finally:
        stop(popen)


def stop(popen: subprocess.Popen[str]) -> None:
    """Ask the child to end (stdin closed), kill it if it does not, and reap it."""
    with contextlib.suppress(OSError):
        if popen.stdin is not None:
            popen.stdin.close()
    try:
        popen.wait(timeout=3)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait(timeout=3)
    for stream in (popen.stdout, popen.stderr):
        if stream is not None:
            stream.close()


def ns_inode(ns: str) -> int:
    """The identity of a named namespace (the nsfs inode the bind mount shows)."""
    return os.stat(netns.path_of(ns)).st_ino


@pytest.fixture
def lab() -> Iterator[labnet.Lab]:
    require_root_tools("ip", "nsenter")
    with labnet.lab() as the_lab:
        yield the_lab


@pytest.fixture
def served(lab: labnet.Lab, tmp_path: Path) -> Iterator[tuple[labnet.Lab, Child, Child, int]]:
    """`ms-srv` serving TCP and UDP 7001 in b, `ms-cli` connected to it from a: (lab, server,
    client, client port)."""
    with child(lab.b, tmp_path, "ms-srv", SERVE, lab.addr_b, "7001") as server:
        assert server.line() == "ready"
        with child(lab.a, tmp_path, "ms-cli", CONNECT, lab.addr_b, "7001") as client:
            yield lab, server, client, int(client.line())


@pytest.mark.netns
def test_sockets_of_another_namespace_name_their_processes(
    served: tuple[labnet.Lab, Child, Child, int],
) -> None:
    lab, server, client, cport = served
    in_b = procfs.sockets(ns_inode(lab.b))
    by_key = {(s.proto, s.local, s.lport, s.remote, s.rport): s for s in in_b}
    listener = by_key["tcp", lab.addr_b, 7001, "0.0.0.0", 0]
    accepted = by_key["tcp", lab.addr_b, 7001, lab.addr_a, cport]
    assert (listener.state, accepted.state) == ("listen", "established")
    assert by_key["udp", lab.addr_b, 7001, "0.0.0.0", 0].state == "listen"
    for s in (listener, accepted):
        assert s.process is not None
        assert (s.process.pid, s.process.name, s.process.path) == (server.pid, "ms-srv", server.path)
        assert (s.process.user, s.process.uid) == ("root", 0)
    outbound = {(s.local, s.lport, s.remote, s.rport): s for s in procfs.sockets(ns_inode(lab.a))}
    mine = outbound[lab.addr_a, cport, lab.addr_b, 7001]
    assert mine.process is not None and (mine.process.name, mine.process.pid) == ("ms-cli", client.pid)
    root = procfs.sockets()
    assert not any(s.process and s.process.pid in (server.pid, client.pid) for s in root)


@pytest.mark.netns
def test_default_namespace_is_the_calling_threads(served: tuple[labnet.Lab, Child, Child, int]) -> None:
    lab, server, _client, _cport = served

    def view(found: list[procfs.Socket]) -> set[tuple[str, str, int, str, int | None]]:
        return {(s.proto, s.local, s.lport, s.state, s.process.pid if s.process else None) for s in found}

    assert view(netns.run_in(lab.b, procfs.sockets)) == view(procfs.sockets(ns_inode(lab.b)))
    listening = netns.run_in(lab.b, procfs.listening)
    assert {(s.proto, s.local, s.lport) for s in listening} == {
        ("tcp", lab.addr_b, 7001),
        ("udp", lab.addr_b, 7001),
    }
    assert {s.process.pid for s in listening if s.process} == {server.pid}


@pytest.mark.netns
def test_the_proc_tables_fallback_reads_what_sock_diag_reads(
    served: tuple[labnet.Lab, Child, Child, int],
) -> None:
    lab, server, _client, _cport = served
    net = f"/proc/{server.pid}/net"
    from_proc = sorted(
        row
        for table, proto, family in procfs._TABLES
        for row in procfs._file_rows(f"{net}/{table}", proto, family)
    )

    def dumped() -> list[tuple[object, ...]]:
        with contextlib.closing(procfs._diag_socket()) as sock:
            return [
                row for _, proto, family in procfs._TABLES for row in procfs._diag_rows(sock, proto, family)
            ]

    from_diag = sorted(netns.run_in(lab.b, dumped))
    assert sorted(procfs._table(ns_inode(lab.b), [server.pid])) == from_diag
    assert from_proc == from_diag
    assert len(from_diag) >= 3  # listener, accepted connection, UDP socket


@pytest.mark.netns
def test_processes_are_those_of_the_namespace(served: tuple[labnet.Lab, Child, Child, int]) -> None:
    lab, server, client, _cport = served
    in_b = {p.pid: p for p in procfs.processes(ns_inode(lab.b))}
    assert server.pid in in_b and client.pid not in in_b
    assert in_b[server.pid].name == "ms-srv"
    assert os.getpid() not in in_b  # the test process stays in the root namespace
    assert {p.pid for p in netns.run_in(lab.a, procfs.processes)} >= {client.pid}


@pytest.mark.netns
def test_ipv4_connections_to_a_dual_stack_listener_read_as_ipv4(lab: labnet.Lab, tmp_path: Path) -> None:
    with child(lab.b, tmp_path, "ms-srv6", SERVE, "::", "7002") as server:
        assert server.line() == "ready"
        with child(lab.a, tmp_path, "ms-cli", CONNECT, lab.addr_b, "7002") as client:
            cport = int(client.line())
            found = {
                (s.proto, s.family, s.local, s.lport, s.remote, s.rport)
                for s in procfs.sockets(ns_inode(lab.b))
            }
            assert ("tcp", 6, "::", 7002, "::", 0) in found
            assert ("tcp", 6, lab.addr_b, 7002, lab.addr_a, cport) in found  # ::ffff:10.77.250.2 unmapped
            index = procfs.OwnerIndex(ns_inode(lab.b))
            owner = index.lookup("tcp", lab.addr_b, 7002, "10.77.250.9", 40000)  # no such connection yet
            assert owner is not None and owner.pid == server.pid  # the dual-stack listener serves IPv4 too


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.netns
def test_owner_index_finds_clients_and_servers_and_rescans_at_most_every_min_rescan(
    served: tuple[labnet.Lab, Child, Child, int], tmp_path: Path
) -> None:
    lab, server, client, cport = served
    clock = FakeClock()
    inbound = procfs.OwnerIndex(ns_inode(lab.b), min_rescan=5.0, clock=clock)
    outbound = procfs.OwnerIndex(ns_inode(lab.a), min_rescan=5.0, clock=clock)
    found = inbound.lookup("tcp", lab.addr_b, 7001, lab.addr_a, cport)
    assert found is not None and found.pid == server.pid
    assert inbound.lookup(17, lab.addr_b, 7001, "10.77.250.77", 5353) == found  # bound UDP socket
    assert inbound.lookup(1, lab.addr_b, 0, lab.addr_a, 0) is None  # no sockets for ICMP
    mine = outbound.lookup("tcp", lab.addr_a, cport, lab.addr_b, 7001)
    assert mine is not None and mine.pid == client.pid
    assert outbound.scans == 1
    with child(lab.a, tmp_path, "ms-cli2", CONNECT, lab.addr_b, "7001") as second:
        port2 = int(second.line())
        assert outbound.lookup("tcp", lab.addr_a, port2, lab.addr_b, 7001, guess=False) is None  # too recent
        guessed = outbound.lookup("tcp", lab.addr_a, port2, lab.addr_b, 7001)
        assert guessed is not None and guessed.pid == client.pid  # the last process seen talking to it
        assert outbound.scans == 1
        clock.now += 5.0
        late = outbound.lookup("tcp", lab.addr_a, port2, lab.addr_b, 7001)
        assert late is not None and (late.pid, late.name) == (second.pid, "ms-cli2")
        assert outbound.scans == 2
    outbound.refresh()
    assert outbound.lookup("tcp", lab.addr_a, port2, lab.addr_b, 7001, guess=False) is None  # exited: gone


def test_cgroup2_mount_is_where_the_unified_hierarchy_is() -> None:
    mount = procfs.cgroup2_mount()
    require(os.path.exists(os.path.join("/sys/fs/cgroup", mount, "cgroup.controllers")), "needs cgroup v2")
    assert mount == mount.strip("/")
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [line.split()[4] for line in f if " - cgroup2 " in line]
    assert os.path.join("/sys/fs/cgroup", mount).rstrip("/") in points


@pytest.mark.netns
def test_process_cgroup_is_the_v2_path(lab: labnet.Lab, tmp_path: Path) -> None:
    require_root("needs root to create a cgroup")
    own = procfs.process(os.getpid())
    require(own is not None and own.cgroup == "/", "needs to run in the root of its cgroup namespace")
    root = os.path.join("/sys/fs/cgroup", procfs.cgroup2_mount())
    require(os.path.exists(os.path.join(root, "cgroup.procs")), "needs cgroup v2")
    top = f"ms-{secrets.token_hex(3)}"
    group = os.path.join(root, top, "db-1")
    os.makedirs(group)
    try:
        with child(lab.b, tmp_path, "ms-db", SERVE, lab.addr_b, "7003") as server:
            assert server.line() == "ready"
            with open(os.path.join(group, "cgroup.procs"), "w", encoding="ascii") as f:
                f.write(str(server.pid))
            found = procfs.process(server.pid)
            assert found is not None and found.cgroup == f"/{top}/db-1"
            [listener] = [s for s in procfs.listening(ns_inode(lab.b)) if s.proto == "tcp"]
            assert listener.process is not None and listener.process.cgroup == f"/{top}/db-1"
    finally:
        os.rmdir(group)  # the child has been reaped, so the group is empty
        os.rmdir(os.path.join(root, top))


def test_an_exited_process_is_none() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert procfs.process(gone.pid) is None


def test_an_executable_whose_path_is_not_utf8_is_named_in_valid_text(tmp_path: Path) -> None:
    """A binary named with bytes that are not UTF-8 must not make its flow records unsendable
    (the server refuses lone surrogates, and one such record would cost the whole batch)."""
    odd = os.path.join(os.fsencode(tmp_path), b"sl\xffeep")
    shutil.copy(shutil.which("sleep") or "/bin/sleep", odd)
    running = subprocess.Popen([odd, "30"])
    try:
        found = procfs.process(running.pid)
        assert found is not None and found.path is not None
        assert found.path.endswith("sl\ufffdeep")
        found.path.encode("utf-8")  # strict: no lone surrogates left
    finally:
        running.kill()
        running.wait()

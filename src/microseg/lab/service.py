"""The lab's services: real processes that listen in a host's namespace under a program's name.

    python -m microseg.lab.service SPEC.json

Started by the runner, synchronously: this launcher forks one child per service in the spec and
exits once every child listens (or fails, killing them all). Each child starts a session of its own,
joins its cgroup, enters its host's namespace, names itself (`mysqld`), binds 0.0.0.0:PORT and
echoes: TCP connections get back what they send, UDP datagrams are answered with themselves. It
counts what it accepted (TCP connections, UDP datagrams) in its counter file, which is also its
readiness signal, so the lab (and its tests) can see traffic arrive without reading the kernel.

What it deliberately does not do: implement the real protocols. Only ports, names and cgroups matter
to the policy.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microseg.lab import files, identity

MAX_CONNECTIONS = 256
"""Open connections per service; beyond, the oldest is closed (a lab never needs more)."""
_FLUSH_SECONDS = 0.2


@dataclass(frozen=True)
class ServiceProcess:
    """One service process to launch."""

    key: str
    place: identity.Place
    port: int
    protocol: str
    counter: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the launch spec."""
        return {
            "key": self.key,
            "place": self.place.to_dict(),
            "port": self.port,
            "protocol": self.protocol,
            "counter": self.counter,
        }

    @staticmethod
    def of(data: dict[str, Any]) -> ServiceProcess:
        """From `to_dict`'s form."""
        return ServiceProcess(
            data["key"], identity.Place.of(data["place"]), data["port"], data["protocol"], data["counter"]
        )


class EchoService:
    """Serves one port: accept and echo (TCP) or answer datagrams (UDP), counting what came in."""

    def __init__(self, spec: ServiceProcess) -> None:
        self.spec = spec
        self.accepted = 0
        self.written = -1
        self.last_flush = 0.0
        self.conns: list[socket.socket] = []
        kind = socket.SOCK_STREAM if spec.protocol == "tcp" else socket.SOCK_DGRAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # SO_REUSEPORT lets a second process listen on the same port beside this one, as an intruder's
        # listener would: the end-to-end tests show process rules admit only the named process.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.sock.bind(("0.0.0.0", spec.port))
        if kind == socket.SOCK_STREAM:
            self.sock.listen(128)

    def flush(self, force: bool = False) -> None:
        """Write the counter file (atomically) when the count changed, at most every 0.2 s."""
        now = time.monotonic()
        if not force and (self.accepted == self.written or now - self.last_flush < _FLUSH_SECONDS):
            return
        data = {
            "pid": os.getpid(),
            "accepted": self.accepted,
            "port": self.spec.port,
            "protocol": self.spec.protocol,
            "process": self.spec.place.name,
        }
        files.write_json(self.spec.counter, data)
        self.written, self.last_flush = self.accepted, now

    def serve_forever(self) -> None:
        """Until killed."""
        self.flush(force=True)
        while True:
            ready, _, _ = select.select([self.sock, *self.conns], [], [], 0.5)
            for sock in ready:
                self._on_readable(sock)
            self.flush()

    def _on_readable(self, sock: socket.socket) -> None:
        try:
            if sock is not self.sock:
                self._echo(sock)
            elif self.spec.protocol == "udp":
                data, peer = sock.recvfrom(2048)
                self.accepted += 1
                sock.sendto(data, peer)
            else:
                self._accept()
        except OSError:
            if sock in self.conns:
                self._close(sock)

    def _accept(self) -> None:
        conn, _ = self.sock.accept()
        self.accepted += 1
        if len(self.conns) >= MAX_CONNECTIONS:
            self._close(self.conns[0])
        self.conns.append(conn)

    def _echo(self, conn: socket.socket) -> None:
        data = conn.recv(4096)
        if not data:
            self._close(conn)
            return
        conn.sendall(data)

    def _close(self, conn: socket.socket) -> None:
        self.conns.remove(conn)
        conn.close()


def _child(spec: ServiceProcess, log: str) -> None:
    """The forked service process; never returns."""
    try:
        _detach(log)
        identity.become(spec.place)
        EchoService(spec).serve_forever()
    except BaseException:  # a service that cannot start says why in the log, then exits
        traceback.print_exc()
    finally:
        os._exit(1)


def _detach(log: str) -> None:
    """A session of its own, stdio off the launcher's pipes (or the launcher's caller would wait)."""
    os.setsid()
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    os.close(null)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def launch(specs: list[ServiceProcess], log: str, timeout: float) -> dict[str, int]:
    """Fork every service; their pids once all listen. On failure every child is killed."""
    pids: dict[str, int] = {}
    for spec in specs:
        pid = os.fork()
        if pid == 0:
            _child(spec, log)
        pids[spec.key] = pid
    try:
        _wait_listening(specs, pids, timeout)
    except BaseException:
        for pid in pids.values():
            os.kill(pid, signal.SIGKILL)
        raise
    return pids


def _wait_listening(specs: list[ServiceProcess], pids: dict[str, int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    waiting = {s.key: s for s in specs}
    while waiting:
        for key, spec in list(waiting.items()):
            if files.read_json(spec.counter) is not None:
                del waiting[key]
            elif os.waitpid(pids[key], os.WNOHANG)[0]:
                raise RuntimeError(f"service {key} exited at start")
        if time.monotonic() > deadline:
            raise RuntimeError(f"services not listening after {timeout:g} s: {', '.join(sorted(waiting))}")
        time.sleep(0.02)


def main(argv: list[str]) -> int:
    """Launch the services of SPEC.json and print their pids as JSON."""
    spec = json.loads(Path(argv[0]).read_text())
    specs = [ServiceProcess.of(item) for item in spec["services"]]
    try:
        pids = launch(specs, spec["log"], float(spec.get("timeout", 10)))
    except RuntimeError as exc:
        print(f"{exc} (see {spec['log']})", file=sys.stderr)
        return 1
    print(json.dumps(pids))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

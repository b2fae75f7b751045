"""The lab's traffic generator: the application's normal flows, at a bounded rate, for a bounded time.

    python -m microseg.lab.traffic SPEC.json

Started detached by the runner, from the topology's flows (`Topology.flows()`). The generator forks
one client process per (source host, client name): the client joins its cgroup, enters the source
host's namespace and names itself (`java`, `prometheus`), so flows are seen coming from a program
as on a real host. Each client connects to each of its targets `rate` times per second (a random
phase, never catching up in bursts), sends a line and waits for the echo, with 1 s timeouts, and
writes what happened per target to its stats file about once a second.

Everything stops at the deadline, on SIGTERM (lab down), and when the generator dies (the clients
get SIGTERM through PR_SET_PDEATHSIG). What it deliberately does not do: decide what is allowed.
A blocked connection is simply counted as failed.
"""

from __future__ import annotations

import heapq
import json
import os
import random
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from microseg.lab import files, identity

PAYLOAD = b"microseg-lab\n"
HOLD = 0.05
"""Seconds a client keeps a connection open after the answer (the agent names the process of a
connection from its socket, which a connection closed within microseconds may not leave time for)."""
TIMEOUT = 1.0
NAME = "lab-traffic"


@dataclass(frozen=True)
class Target:
    """One destination of a client: a service on another host."""

    target: str
    address: str
    port: int
    protocol: str
    rate: float

    @property
    def label(self) -> str:
        """How stats name it: `db-1 tcp/3306`."""
        return f"{self.target} {self.protocol}/{self.port}"


@dataclass(frozen=True)
class Client:
    """One client process: where it lives and whom it connects to."""

    host: str
    place: identity.Place
    stats: str
    targets: tuple[Target, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the spec."""
        return {
            "host": self.host,
            "place": self.place.to_dict(),
            "stats": self.stats,
            "targets": [vars(t) for t in self.targets],
        }

    @staticmethod
    def of(data: dict[str, Any]) -> Client:
        """From `to_dict`'s form."""
        targets = tuple(Target(**t) for t in data["targets"])
        return Client(data["host"], identity.Place.of(data["place"]), data["stats"], targets)


def attempt(target: Target) -> str:
    """One connection: `ok` when the echo came back, else `refused`, `timeout` or `error`."""
    kind = socket.SOCK_STREAM if target.protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.settimeout(TIMEOUT)
        try:
            sock.connect((target.address, target.port))
            sock.sendall(PAYLOAD)
            answered = sock.recv(64) == PAYLOAD
            time.sleep(HOLD)  # a client keeps its connection a moment, as a real request does
            return "ok" if answered else "error"
        except ConnectionRefusedError:
            return "refused"
        except TimeoutError:
            return "timeout"
        except OSError:
            return "error"


class ClientLoop:
    """Connects to every target at its rate until the deadline; counts outcomes per target."""

    def __init__(self, client: Client, deadline: float) -> None:
        self.client = client
        self.deadline = deadline
        self.ok = {t.label: 0 for t in client.targets}
        self.failed = {t.label: 0 for t in client.targets}
        self.last = {t.label: "" for t in client.targets}
        self.flushed = 0.0

    def run(self) -> None:
        """Until the deadline (monotonic clock)."""
        now = time.monotonic()
        queue = [(now + random.uniform(0, 1 / t.rate), i) for i, t in enumerate(self.client.targets)]
        heapq.heapify(queue)
        while queue:
            due, index = heapq.heappop(queue)
            if due >= self.deadline:
                break
            time.sleep(max(0.0, due - time.monotonic()))
            target = self.client.targets[index]
            self._count(target, attempt(target))
            heapq.heappush(queue, (max(due + 1 / target.rate, time.monotonic()), index))
            self.flush()
        self.flush(force=True)

    def _count(self, target: Target, outcome: str) -> None:
        counts = self.ok if outcome == "ok" else self.failed
        counts[target.label] += 1
        self.last[target.label] = outcome

    def flush(self, force: bool = False) -> None:
        """Write the stats file about once a second."""
        if not force and time.monotonic() - self.flushed < 1.0:
            return
        targets = {k: {"ok": self.ok[k], "failed": self.failed[k], "last": self.last[k]} for k in self.ok}
        data = {"host": self.client.host, "client": self.client.place.name, "targets": targets}
        files.write_json(self.client.stats, data)
        self.flushed = time.monotonic()


def _run_client(client: Client, deadline: float, parent: int) -> None:
    """The forked client process; never returns."""
    try:
        identity.die_with_parent()
        if os.getppid() != parent:  # the generator died before the death signal was armed
            os._exit(0)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        identity.become(client.place)
        ClientLoop(client, deadline).run()
        os._exit(0)
    except BaseException:
        traceback.print_exc()
        os._exit(1)


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def generate(clients: list[Client], lifetime: float) -> None:
    """Fork the clients and wait for them until the deadline or SIGTERM; they never outlive this."""
    deadline = time.monotonic() + lifetime
    signal.signal(signal.SIGTERM, _stop)
    children: list[int] = []
    me = os.getpid()
    try:
        for client in clients:
            pid = os.fork()
            if pid == 0:
                _run_client(client, deadline, me)
            children.append(pid)
        while children and time.monotonic() < deadline + TIMEOUT * 2:
            children = [pid for pid in children if os.waitpid(pid, os.WNOHANG)[0] == 0]
            time.sleep(0.2)
    finally:
        for pid in children:
            os.kill(pid, signal.SIGTERM)
        for pid in children:
            os.waitpid(pid, 0)


def main(argv: list[str]) -> int:
    """Run the generator of SPEC.json: {"lifetime": seconds, "clients": [...]}."""
    spec = json.loads(Path(argv[0]).read_text())
    identity.set_name(NAME)
    generate([Client.of(c) for c in spec["clients"]], float(spec["lifetime"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

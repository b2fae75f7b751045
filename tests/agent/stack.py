"""A real control plane and a real agent process in two ms- namespaces, for the agent's own
end-to-end tests (the full lab has its own in tests/lab).

    ns a (10.77.250.1): `microseg server`          ns b (10.77.250.2): `microseg agent --netns b`

API calls are made from a thread inside namespace a (sockets live where they are created), so
nothing listens or connects in the root namespace. Every process is killed at the end.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from microseg.agent import netns
from tests.render import netns as labnet

T = TypeVar("T")
PORT = 8440
SERVE = """
import ctypes, select, socket, sys
ctypes.CDLL(None).prctl(15, sys.argv[2].encode(), 0, 0, 0)  # PR_SET_NAME: what /proc/PID/comm says
listeners = []
for port in sys.argv[3:]:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(port))); s.listen(64); listeners.append(s)
while True:
    for s in select.select(listeners, [], [])[0]:
        s.accept()[0].close()
"""


@dataclass
class Stack:
    """The server side of the test: its URL, admin token and a way to restart it."""

    lab: labnet.Lab
    dir: Path
    token: str = ""
    server: subprocess.Popen[bytes] | None = None
    agents: list[subprocess.Popen[bytes]] = field(default_factory=list)
    services: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.lab.addr_a}:{PORT}"

    def start_server(self) -> None:
        log = self.dir / "server.log"
        command = ["nsenter", f"--net=/run/netns/{self.lab.a}", sys.executable, "-m", "microseg", "server",
                   "--host", self.lab.addr_a, "--port", str(PORT), "--data-dir", str(self.dir / "server"),
                   "--control-plane", f"{self.lab.addr_a}:{PORT}", "--log-level", "warning"]  # fmt: skip
        with log.open("ab") as out:
            self.server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=_env())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise AssertionError(f"server exited: {log.read_text()[-2000:]}")
            try:
                if self.in_a(lambda: httpx.get(self.url + "/healthz", timeout=1)).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"server not ready: {log.read_text()[-2000:]}")
        if not self.token:  # not a terminal: the first start leaves the token in a 0600 file
            self.token = (self.dir / "server" / "initial-admin-token").read_text().strip()

    def kill_server(self) -> None:
        if self.server is not None:
            _kill(self.server)
            self.server = None

    def in_a(self, fn: Callable[[], T]) -> T:
        return netns.run_in(self.lab.a, fn)

    def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201)) -> Any:
        def go() -> httpx.Response:
            return httpx.request(method, self.url + "/api/v1" + path, json=body, timeout=30,
                                 headers={"Authorization": f"Bearer {self.token}"})  # fmt: skip

        response = self.in_a(go)
        assert response.status_code in ok, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    def enrollment_token(self, labels: dict[str, str], mode: str = "enforce") -> str:
        made = self.call("POST", "/enrollment-tokens", {"name": "test", "labels": labels, "mode": mode})
        return str(made["token"])

    def start_agent(self, token: str | None, hostname: str = "lab-b", *extra: str) -> subprocess.Popen[bytes]:
        log = self.dir / "agent.log"
        command = [sys.executable, "-m", "microseg", "agent", "--server", self.url, "--netns", self.lab.b,
                   "--state-dir", str(self.dir / "agent"), "--hostname", hostname, "--log-level", "debug",
                   *(["--enroll-token", token] if token else []), *extra]  # fmt: skip
        with log.open("ab") as out:
            agent = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=_env())
        self.agents.append(agent)
        return agent

    def serve_process(self, ns: str, address: str, name: str, *ports: int) -> None:
        """A separate process in `ns` named `name` accepting TCP on `ports` (stopped at the end)."""
        command = ["nsenter", f"--net=/run/netns/{ns}", sys.executable, "-c", SERVE, address, name,
                   *map(str, ports)]  # fmt: skip
        self.services.append(subprocess.Popen(command, env=_env()))
        for port in ports:
            wait_for(
                f"{name} on {port}",
                lambda p=port: reach(self.lab, self.lab.a, address, p) == "open",
                timeout=10,
            )

    def stop_agents(self) -> None:
        for agent in self.agents:
            _kill(agent)
        self.agents.clear()

    def provision(self, documents: list[dict[str, Any]], note: str = "test") -> int:
        self.call("POST", "/apply", {"documents": documents})
        return int(self.call("POST", "/versions", {"note": note})["number"])

    def events(self, kind: str) -> list[dict[str, Any]]:
        found = self.call("GET", f"/events?kind={kind}")
        return list(found["items"] if isinstance(found, dict) else found)

    def flows(self) -> list[dict[str, Any]]:
        found = self.call("GET", "/flows?limit=1000")
        return list(found["items"] if isinstance(found, dict) else found)

    def agent_state(self) -> dict[str, Any]:
        found = self.call("GET", "/agents")
        items = found["items"] if isinstance(found, dict) else found
        return dict(items[0]) if items else {}


def reach(lab: labnet.Lab, ns: str, address: str, port: int, timeout: float = 0.5) -> str:
    """`open`, `refused` or `timeout` for one TCP connect from `ns` (no data exchanged)."""
    sock = lab.open_socket(ns, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((address, port))
    except TimeoutError:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    finally:
        sock.close()
    return "open"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "ignore"}


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
        process.wait(10)


def wait_for(what: str, check: Callable[[], T], timeout: float = 15.0, every: float = 0.1) -> T:
    """`check()`'s first truthy value within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


@contextmanager
def stack(tmp: Path) -> Iterator[Stack]:
    """Two namespaces, a running server in a; agents are started by the test; all stopped after."""
    with labnet.lab() as the_lab:
        s = Stack(the_lab, tmp)
        try:
            s.start_server()
            yield s
        finally:
            s.stop_agents()
            s.kill_server()
            for service in s.services:
                _kill(service)

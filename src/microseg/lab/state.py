"""A running lab as recorded in its state file, and how tests act inside it.

Written by the runner step by step while `up` makes things (so `down` knows what a half-made lab
holds), read by `status`, `down` and tests. The file holds the admin token, so it is the owner's
only (0600, in a 0700 directory).

For tests: `LabState.load(options)` gives the running lab; `exec(host, fn)` runs `fn` inside a
host's namespace (a short-lived setns thread: the caller never leaves its own namespace);
`reach(src, dst, port)` makes one connection attempt from one host to another's service and says
how it went (`open`, `refused`, `timeout`, `eperm`, `no-echo`); `connect` hands out the connected
socket and `open_socket` a bare one; `accepted(host, port)` reads how many connections a service
has accepted.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from microseg import errors
from microseg.agent import netns
from microseg.lab import files, options, topology

T = TypeVar("T")
PROBE = b"microseg-probe"


@dataclass
class HostState:
    """One lab host as it was made."""

    name: str
    netns: str
    ip: str
    labels: dict[str, str]
    services: list[dict[str, Any]]
    veth: str = ""
    enroll_token: str = ""
    pids: dict[str, int] = field(default_factory=dict)
    """Service process pids by `<process>/<protocol>/<port>`, and `agent`."""

    def status(self) -> dict[str, Any]:
        """The `status -o json` entry."""
        return {
            "name": self.name,
            "netns": self.netns,
            "ip": self.ip,
            "labels": self.labels,
            "services": self.services,
        }


@dataclass
class LabState:
    """Everything one `up` made: names, pids, the server and its admin token."""

    prefix: str
    state_dir: str
    topology: str
    mode: str
    server: str = ""
    token: str = ""
    bridge: str = ""
    cgroup: str = ""
    """The lab's cgroup directory (absolute)."""
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    hosts: list[HostState] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)
    """`server`, `traffic`, and the per-host processes flattened as `<host>/<key>`."""
    started_at: float = 0.0
    complete: bool = False

    # --- the file ---------------------------------------------------------------------------------

    def save(self) -> None:
        """Write the state file atomically, readable by the owner only."""
        directory = Path(self.state_dir)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        files.write_json(directory / "state.json", asdict(self), mode=0o600, indent=2)

    @staticmethod
    def load(opts: options.LabOptions) -> LabState | None:
        """The lab recorded in `opts.state_dir`, or None when there is no (readable) state file."""
        try:
            data = json.loads(opts.state_file.read_text(encoding="utf-8"))
            hosts = [HostState(**h) for h in data.pop("hosts")]
            return LabState(**data, hosts=hosts)
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def status(self) -> dict[str, Any]:
        """What `microseg lab status -o json` prints."""
        return {"server": self.server, "hosts": [h.status() for h in self.hosts]}

    # --- acting inside the lab ------------------------------------------------------------------

    def host(self, name: str) -> HostState:
        """The host called `name`."""
        for host in self.hosts:
            if host.name == name:
                return host
        known = ", ".join(h.name for h in self.hosts)
        raise errors.LookupFailedError(f"no lab host {name!r} (hosts: {known})")

    def exec(self, host: str, fn: Callable[[], T]) -> T:
        """`fn()` evaluated inside the host's network namespace (in a short-lived thread)."""
        return netns.run_in(self.host(host).netns, fn)

    def open_socket(self, host: str, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A new IPv4 socket living in the host's namespace."""
        return self.exec(host, lambda: socket.socket(socket.AF_INET, kind))

    def connect(self, src: str, dst: str, port: int, timeout: float = 1.0) -> socket.socket:
        """An open TCP connection from `src` to `dst`:`port` (raises OSError when it cannot be made)."""
        sock = self.open_socket(src)
        sock.settimeout(timeout)
        try:
            sock.connect((self.host(dst).ip, port))
        except BaseException:
            sock.close()
            raise
        return sock

    def reach(self, src: str, dst: str, port: int, protocol: str = "tcp", timeout: float = 1.0) -> str:
        """One attempt from `src` to `dst`:`port`: `open` (TCP echo) / `echo` (UDP), `refused`,
        `timeout`, `eperm` (dropped by the sender's own output chain) or `no-echo`."""
        kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
        with contextlib.closing(self.open_socket(src, kind)) as sock:
            sock.settimeout(timeout)
            try:
                if protocol == "tcp":
                    sock.connect((self.host(dst).ip, port))
                    sock.sendall(PROBE)
                    return "open" if sock.recv(64) == PROBE else "no-echo"
                sock.sendto(PROBE, (self.host(dst).ip, port))
                return "echo" if sock.recvfrom(64)[0] == PROBE else "no-echo"
            except TimeoutError:
                return "timeout"
            except ConnectionRefusedError:
                return "refused"
            except PermissionError:
                return "eperm"
            except ConnectionResetError:
                return "no-echo"

    def counter_file(self, host: str, port: int, protocol: str = "tcp") -> Path:
        """Where the service on `host` `protocol`/`port` counts what it accepted."""
        return Path(self.state_dir, "services", host, f"{protocol}-{port}.json")

    def accepted(self, host: str, port: int, protocol: str = "tcp") -> int:
        """TCP connections (UDP datagrams) the service has accepted so far (flushed every 0.2 s)."""
        counter = files.read_json(self.counter_file(host, port, protocol))
        return int(counter["accepted"]) if counter else 0

    def traffic_stats(self) -> list[dict[str, Any]]:
        """What each traffic client reported: {"host", "client", "targets": {"db-1 tcp/3306": ...}}."""
        directory = Path(self.state_dir, "traffic")
        found = (files.read_json(p) for p in sorted(directory.glob("*.json")))
        return [s for s in found if s is not None]


def new(top: topology.Topology, opts: options.LabOptions, started_at: float) -> LabState:
    """The state of a lab about to be made (nothing exists yet)."""
    names = opts.names
    hosts = [
        HostState(h.name, names.netns(h.name), h.address, dict(h.labels), [s.to_dict() for s in h.services])
        for h in top.hosts
    ]
    return LabState(opts.prefix, opts.state_dir, top.file, opts.mode, hosts=hosts, started_at=started_at)

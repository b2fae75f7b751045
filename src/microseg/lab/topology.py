"""Lab topology files: which hosts the lab has, what each serves, and whom each talks to.

Fed by a YAML file (`examples/lab/topology.yaml` is the default); feeds the lab runner (hosts become
namespaces, services become processes), the inventory (hosts become Workloads) and the traffic
generator (`Topology.flows()`: every `talksTo` edge resolved to the hosts its selector picks).

    everyHost: {services: [{port: 22, process: sshd}]}      # added to every host
    hosts:
      - name: web-1                                         # hostname, workload name, netns suffix
        address: 10.77.1.11                                 # optional; else the next free 10.77.1.N
        labels: {env: prod, role: web}
        services: [{port: 80, protocol: tcp, process: nginx}]
        talksTo: [{to: "role=app", port: 8080, protocol: tcp, client: nginx, rate: 1.0}]

Errors are reported all at once as `file:line: field.path: message` (the policy-file reader's
machinery), and nothing is returned while anything is wrong. What it does not do: create anything.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from microseg import errors
from microseg.model import labels, selectors
from microseg.policyfile import nodes
from microseg.policyfile.reader import Reader, describe

LAB_NETWORK = ipaddress.ip_network("10.77.0.0/16")
GATEWAY = ipaddress.ip_address("10.77.0.1")
"""The host side of the lab bridge, where the control plane listens; no lab host may take it."""
FIRST_HOST = ipaddress.ip_address("10.77.1.1")
MAX_HOSTS = 200
PROTOCOLS = ("tcp", "udp")
MAX_RATE = 10.0
DEFAULT_CLIENT = "lab-client"


class TopologyError(errors.PolicyFileError):
    """All problems found in a topology file (file:line: field: message); nothing was made."""

    what = "the lab topology"
    outcome = "nothing was made"


_HOSTNAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_COMM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,14}$")
"""A process name that fits /proc/PID/comm (15 bytes) and a cgroup directory name."""


@dataclass(frozen=True)
class ServiceSpec:
    """A port a host serves, and the name of the process serving it."""

    port: int
    protocol: str
    process: str

    def to_dict(self) -> dict[str, Any]:
        """The `status -o json` form."""
        return {"port": self.port, "protocol": self.protocol, "process": self.process}


@dataclass(frozen=True)
class Edge:
    """One `talksTo` entry: connections to `port` on every other host the selector picks."""

    to: selectors.LabelSelector
    port: int
    protocol: str
    client: str
    rate: float


@dataclass(frozen=True)
class Host:
    """A lab host: one network namespace with its address, labels and services."""

    name: str
    address: str
    labels: labels.Labels
    services: tuple[ServiceSpec, ...]
    talks_to: tuple[Edge, ...]

    def serves(self, port: int, protocol: str) -> ServiceSpec | None:
        """The service on `port`/`protocol`, if any."""
        return next((s for s in self.services if (s.port, s.protocol) == (port, protocol)), None)


@dataclass(frozen=True)
class Flow:
    """A normal connection of the application: from one host to another host's service."""

    source: str
    target: str
    address: str
    port: int
    protocol: str
    client: str
    rate: float


@dataclass(frozen=True)
class Topology:
    """The hosts of a lab, in file order (which is also the order of their interfaces)."""

    file: str
    hosts: tuple[Host, ...]

    def host(self, name: str) -> Host:
        """The host called `name`."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise errors.LookupFailedError(f"no host {name!r} in {self.file}")

    def flows(self) -> tuple[Flow, ...]:
        """Every edge resolved to the hosts it picks (never the source itself)."""
        return tuple(
            Flow(src.name, dst.name, dst.address, edge.port, edge.protocol, edge.client, edge.rate)
            for src in self.hosts
            for edge in src.talks_to
            for dst in self.picked(src, edge)
        )

    def picked(self, source: Host, edge: Edge) -> list[Host]:
        """The other hosts whose labels match the edge's selector."""
        return [h for h in self.hosts if h.name != source.name and edge.to.matches(h.labels)]


def default_path() -> Path:
    """The default topology shipped in the package."""
    return Path(str(resources.files("microseg") / "examples" / "lab" / "topology.yaml"))


def default_policy_dir() -> Path:
    """The default lab policy shipped in the package (allows exactly the default topology's flows)."""
    return Path(str(resources.files("microseg") / "examples" / "lab" / "policy"))


def load(path: str | Path) -> Topology:
    """Read a topology file; a TopologyError lists every problem with file:line and field."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError([errors.Problem(str(path), 0, "", f"cannot read the file: {exc}")]) from exc
    return load_text(text, str(path))


def load_text(text: str, filename: str = "<text>") -> Topology:
    """Parse topology text (one YAML document)."""
    docs, problems = nodes.parse(text, filename)
    if not problems and len(docs) != 1:
        found = f"{len(docs)} documents" if docs else "nothing"
        problems.append(
            errors.Problem(filename, 0, "", f"expected one YAML document with hosts, got {found}")
        )
    if problems:
        raise TopologyError(problems)
    topology = _TopologyReader(Reader(docs[0], problems)).read()
    if problems or topology is None:
        raise TopologyError(problems)
    return topology


class _TopologyReader:
    """One pass over the document: builds hosts and records every problem on the way."""

    def __init__(self, r: Reader) -> None:
        self.r = r
        self.taken: dict[str, str] = {}
        """Host names and explicit addresses seen so far, with where each was given."""

    def read(self) -> Topology | None:
        top = self.r.mapping(self.r.doc.data, (), ("everyHost", "hosts"), ("hosts",))
        if top is None or "hosts" not in top:
            return None
        common = self._every_host(top.get("everyHost"))
        entries = self.r.items(top["hosts"], ("hosts",))
        if not 1 <= len(entries) <= MAX_HOSTS:
            self.r.error(("hosts",), f"{len(entries)} hosts; a lab holds 1 to {MAX_HOSTS}")
            return None
        raw = [h for h in (self._host(path, value, common) for path, value in entries) if h is not None]
        if len(raw) != len(entries):
            return None
        topology = Topology(self.r.doc.file, tuple(self._addressed(raw)))
        for host, r in zip(topology.hosts, raw, strict=True):
            self._check_edges(topology, host, r["edges"])
        return topology

    def _every_host(self, value: Any) -> list[tuple[nodes.Path, ServiceSpec]]:
        if value is None:
            return []
        m = self.r.mapping(value, ("everyHost",), ("services",))
        if m is None or "services" not in m:
            return []
        return self._services(m["services"], ("everyHost", "services"))

    def _host(
        self, path: nodes.Path, value: Any, common: list[tuple[nodes.Path, ServiceSpec]]
    ) -> dict[str, Any] | None:
        allowed = ("name", "address", "labels", "services", "talksTo")
        m = self.r.mapping(value, path, allowed, ("name", "labels"))
        if m is None or "name" not in m or "labels" not in m:
            return None
        before = len(self.r.problems)
        name = self._name(m["name"], (*path, "name"))
        found = self.r.labels(m["labels"], (*path, "labels"))
        address = self._address(m["address"], (*path, "address")) if "address" in m else None
        own = self._services(m.get("services", []), (*path, "services"))
        services = self._merged(common, own)
        edges = self._edges(m.get("talksTo", []), (*path, "talksTo"))
        if len(self.r.problems) > before or name is None or found is None:
            return None
        return {"name": name, "address": address, "labels": found, "services": services, "edges": edges}

    def _name(self, value: Any, path: nodes.Path) -> str | None:
        name = self.r.text(value, path)
        if name is None:
            return None
        if not _HOSTNAME.fullmatch(name):
            self.r.error(path, f"host name {name!r}: 1-63 lowercase letters, digits and '-' (a hostname)")
            return None
        if name in self.taken:
            self.r.error(path, f"duplicate host name {name} (first defined at {self.taken[name]})")
            return None
        self.taken[name] = self.r.where(path)
        return name

    def _address(self, value: Any, path: nodes.Path) -> str | None:
        text = self.r.text(value, path)
        if text is None:
            return None
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            self.r.error(path, f"{text!r} is not an IP address")
            return None
        usable = address in LAB_NETWORK and address not in (LAB_NETWORK[0], LAB_NETWORK[-1], GATEWAY)
        if not usable:
            self.r.error(path, f"{text}: lab hosts need an address in {LAB_NETWORK} other than {GATEWAY}")
            return None
        key = f"address {address}"
        if key in self.taken:
            self.r.error(path, f"address {address} is already used (at {self.taken[key]})")
            return None
        self.taken[key] = self.r.where(path)
        return str(address)

    def _services(self, value: Any, path: nodes.Path) -> list[tuple[nodes.Path, ServiceSpec]]:
        out: list[tuple[nodes.Path, ServiceSpec]] = []
        for item_path, item in self.r.items(value, path):
            m = self.r.mapping(item, item_path, ("port", "protocol", "process"), ("port", "process"))
            if m is None or "port" not in m or "process" not in m:
                continue
            port = self._port(m["port"], (*item_path, "port"))
            protocol = self._protocol(m.get("protocol", "tcp"), (*item_path, "protocol"))
            process = self._comm(m["process"], (*item_path, "process"))
            if port is not None and protocol is not None and process is not None:
                out.append((item_path, ServiceSpec(port, protocol, process)))
        return out

    def _merged(
        self, common: list[tuple[nodes.Path, ServiceSpec]], own: list[tuple[nodes.Path, ServiceSpec]]
    ) -> tuple[ServiceSpec, ...]:
        seen: dict[tuple[int, str], nodes.Path] = {}
        for path, spec in [*common, *own]:
            key = (spec.port, spec.protocol)
            if key in seen:
                self.r.error(
                    path, f"{spec.protocol}/{spec.port} is served twice (also at {self.r.where(seen[key])})"
                )
            seen[key] = path
        return tuple(spec for _, spec in [*own, *common])

    def _edges(self, value: Any, path: nodes.Path) -> list[tuple[nodes.Path, Edge]]:
        out: list[tuple[nodes.Path, Edge]] = []
        allowed = ("to", "port", "protocol", "client", "rate")
        for item_path, item in self.r.items(value, path):
            m = self.r.mapping(item, item_path, allowed, ("to", "port"))
            if m is None or "to" not in m or "port" not in m:
                continue
            to = self._selector(m["to"], (*item_path, "to"))
            port = self._port(m["port"], (*item_path, "port"))
            protocol = self._protocol(m.get("protocol", "tcp"), (*item_path, "protocol"))
            client = self._comm(m.get("client", DEFAULT_CLIENT), (*item_path, "client"))
            rate = self._rate(m.get("rate", 1.0), (*item_path, "rate"))
            if None not in (to, port, protocol, client, rate):
                out.append((item_path, Edge(to, port, protocol, client, rate)))  # type: ignore[arg-type]
        return out

    def _selector(self, value: Any, path: nodes.Path) -> selectors.LabelSelector | None:
        text = self.r.text(value, path)
        if text is None:
            return None
        return self.r.guard(path, lambda: selectors.LabelSelector.parse(text), {"values": ()})

    def _port(self, value: Any, path: nodes.Path) -> int | None:
        port = self.r.integer(value, path)
        if port is not None and not 1 <= port <= 65535:
            self.r.error(path, f"port {port} is not between 1 and 65535")
            return None
        return port

    def _protocol(self, value: Any, path: nodes.Path) -> str | None:
        text = self.r.text(value, path)
        if text is not None and text not in PROTOCOLS:
            self.r.error(path, f"'{text}' is not one of {', '.join(PROTOCOLS)}")
            return None
        return text

    def _comm(self, value: Any, path: nodes.Path) -> str | None:
        text = self.r.text(value, path)
        if text is not None and not _COMM.fullmatch(text):
            self.r.error(
                path, f"process name {text!r}: 1-15 letters, digits, '_', '.', ':', '+', '-' (a /proc comm)"
            )
            return None
        return text

    def _rate(self, value: Any, path: nodes.Path) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.r.error(path, f"expected connections per second (a number), got {describe(value)}")
            return None
        if not 0 < value <= MAX_RATE:
            self.r.error(path, f"rate {value} must be above 0 and at most {MAX_RATE:g} per second")
            return None
        return float(value)

    def _addressed(self, raw: list[dict[str, Any]]) -> list[Host]:
        """Hosts without an address get the next free one from 10.77.1.1 on, in file order."""
        used = {r["address"] for r in raw if r["address"]}
        candidates = (str(FIRST_HOST + i) for i in range(LAB_NETWORK.num_addresses))
        free = (a for a in candidates if a not in used)
        return [
            Host(
                r["name"],
                r["address"] or next(free),
                r["labels"],
                r["services"],
                tuple(edge for _, edge in r["edges"]),
            )
            for r in raw
        ]

    def _check_edges(self, topology: Topology, host: Host, edges: list[tuple[nodes.Path, Edge]]) -> None:
        """Every edge picks at least one other host, and every host it picks serves its port."""
        for path, edge in edges:
            picked = topology.picked(host, edge)
            if not picked:
                self.r.error((*path, "to"), f"'{edge.to}' picks no host other than {host.name}")
            for target in picked:
                if target.serves(edge.port, edge.protocol) is None:
                    self.r.error(
                        (*path, "port"),
                        f"{target.name} (picked by '{edge.to}') serves nothing on "
                        f"{edge.protocol}/{edge.port}",
                    )

"""Services: ports, port ranges and protocols, optionally bound to a process and user.

`process` and `user` describe the serving side (the process listening on the destination);
`client_process` and `client_user` the connecting side. Where a data plane cannot enforce a
process constraint it enforces the port and says so; it never silently widens or drops it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from microseg.errors import ValidationError


class Protocol(StrEnum):
    """Transport protocols a service can name; `any` matches every protocol and port."""

    TCP = "tcp"
    UDP = "udp"
    SCTP = "sctp"
    ICMP = "icmp"
    ANY = "any"

    @property
    def has_ports(self) -> bool:
        """Whether ports mean anything for this protocol."""
        return self in (Protocol.TCP, Protocol.UDP, Protocol.SCTP)


@dataclass(frozen=True, order=True)
class PortRange:
    """An inclusive port range; a single port has `first == last`."""

    first: int
    last: int

    def __post_init__(self) -> None:
        if not (1 <= self.first <= self.last <= 65535):
            raise ValidationError(f"port range {self.first}-{self.last} must lie within 1-65535, low <= high")

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"


@dataclass(frozen=True, order=True)
class PortSpec:
    """One protocol with its port ranges (empty ranges = every port of that protocol)."""

    protocol: Protocol
    ports: tuple[PortRange, ...] = ()

    def __post_init__(self) -> None:
        if self.ports and not self.protocol.has_ports:
            raise ValidationError(f"protocol {self.protocol.value} has no ports", "ports")
        object.__setattr__(self, "ports", tuple(sorted(set(self.ports))))

    def matches(self, protocol: Protocol, port: int | None) -> bool:
        """Whether a connection with this protocol and destination port is covered."""
        if self.protocol is Protocol.ANY:
            return True
        if protocol is not self.protocol:
            return False
        return not self.ports or (port is not None and any(port in r for r in self.ports))

    def __str__(self) -> str:
        if self.protocol is Protocol.ANY:
            return "any"
        if not self.ports:
            return f"{self.protocol.value}/*"
        return ",".join(f"{r}/{self.protocol.value}" for r in self.ports)


@dataclass(frozen=True)
class Service:
    """A named set of port specs with optional process and user constraints."""

    name: str
    specs: tuple[PortSpec, ...]
    process: str | None = None
    user: str | None = None
    client_process: str | None = None
    client_user: str | None = None

    def __post_init__(self) -> None:
        if not self.specs:
            raise ValidationError(f"service {self.name}: needs at least one port or protocol", "ports")

    def matches(self, protocol: Protocol, port: int | None) -> bool:
        """Port/protocol match only; process constraints are checked by the evaluator."""
        return any(s.matches(protocol, port) for s in self.specs)

    @property
    def has_process_constraint(self) -> bool:
        """Whether a process or user is named on either side."""
        return any((self.process, self.user, self.client_process, self.client_user))

    def __str__(self) -> str:
        text = " ".join(map(str, self.specs))
        return text + (f" (process {self.process})" if self.process else "")


ANY_SERVICE = Service(name="any", specs=(PortSpec(Protocol.ANY),))
"""Every protocol and port, for rules that say `services: any`."""


PORT_SYNTAX = "PORT, PORT/PROTO, PROTO/PORT, LOW-HIGH/PROTO, a protocol (icmp) or a service name"
"""What every command's `--port` accepts (a bare port means tcp), for help and error texts."""

_CONCRETE = tuple(p.value for p in Protocol if p is not Protocol.ANY)


def parse_port(text: str) -> PortSpec:
    """The one reading of a port as people write it: `8080`, `8080/tcp`, `tcp/8080`, `8000-8080/tcp`,
    `icmp`, `udp` (every udp port). ValidationError (field `port`) for anything else, port 0 and
    ports past 65535 included."""
    first, sep, second = text.strip().lower().partition("/")
    if not sep and first in _CONCRETE:
        return PortSpec(Protocol(first))
    if not sep:
        second = "tcp"
    elif first in _CONCRETE and second not in _CONCRETE:
        first, second = second, first
    if second not in _CONCRETE:
        raise _port_error(text, f"unknown protocol {second!r} (one of {', '.join(_CONCRETE)})")
    protocol = Protocol(second)
    if not protocol.has_ports:
        raise _port_error(text, f"{protocol.value} has no ports")
    return PortSpec(protocol, (_port_range(first, text),))


def resolve_port(text: str, known: dict[str, Service]) -> tuple[PortSpec, ...]:
    """A service of the estate by name, else `parse_port`; a word that is neither names the
    services the estate has, so a typo is not read as a protocol or a port."""
    if text.strip() in known:
        return known[text.strip()].specs
    try:
        return (parse_port(text),)
    except ValidationError:
        if any(c.isdigit() or c == "/" for c in text) or not text.strip():
            raise
    names = ", ".join(sorted(known)) or "none"
    raise ValidationError(f"port {text!r} is neither a port nor a known service (services: {names})", "port")


def _port_range(text: str, whole: str) -> PortRange:
    low, dash, high = text.partition("-")
    if not low.isdigit() or (dash and not high.isdigit()):
        raise _port_error(whole, "expected a port number or LOW-HIGH")
    first, last = int(low), int(high) if dash else int(low)
    if not 1 <= first <= last <= 65535:
        raise _port_error(whole, "ports are 1-65535, low <= high")
    return PortRange(first, last)


def _port_error(text: str, why: str) -> ValidationError:
    return ValidationError(f"port {text!r}: {why}; expected {PORT_SYNTAX}", "port")

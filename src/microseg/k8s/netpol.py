"""`networking.k8s.io/v1` NetworkPolicy as frozen values, with the upstream matching rules.

Read by `microseg.k8s.policies` (manifests -> these values, with the API's defaults applied:
protocol TCP, policyTypes from the rules present), written by the NetworkPolicy exporter, and
interpreted by `microseg.k8s.reachability`. The semantics here are the upstream ones:

- a rule with no peers matches every peer; a rule with no ports matches every port and protocol;
- one peer's podSelector and namespaceSelector are ANDed; a podSelector alone means the policy's
  own namespace; an ipBlock matches any address in `cidr` outside every `except` (pod IPs too);
- a numeric port matches that port, or the inclusive range `port`..`endPort`; a named port matches
  when the destination pod has a container port of that name and protocol with that number.

What it deliberately does not do: decide isolation or combine policies (reachability does).
"""

from __future__ import annotations

from dataclasses import dataclass

from microseg.model import addresses, selectors, services

PROTOCOLS = (services.Protocol.TCP, services.Protocol.UDP, services.Protocol.SCTP)
"""The protocols a NetworkPolicy port can name."""


@dataclass(frozen=True)
class PolicyPort:
    """One entry of a rule's `ports`: no `port` means every port of `protocol`."""

    protocol: services.Protocol = services.Protocol.TCP
    port: int | str | None = None
    end_port: int | None = None

    def number_matches(self, number: int, protocol: services.Protocol) -> bool | None:
        """Whether a numeric entry covers `number`; None when the entry is a named port."""
        if protocol is not self.protocol:
            return False
        if self.port is None:
            return True
        if isinstance(self.port, str):
            return None
        return self.port == number or (self.end_port is not None and self.port <= number <= self.end_port)

    def __str__(self) -> str:
        if self.port is None:
            return f"{self.protocol.value.upper()}/*"
        span = f"{self.port}-{self.end_port}" if self.end_port is not None else str(self.port)
        return f"{span}/{self.protocol.value.upper()}"


@dataclass(frozen=True)
class IpBlock:
    """`cidr` minus every network in `excepts`."""

    cidr: addresses.Network
    excepts: tuple[addresses.Network, ...] = ()

    def contains(self, address: addresses.Address) -> bool:
        """Whether `address` is in the block."""
        return address in self.cidr and not any(address in cut for cut in self.excepts)


@dataclass(frozen=True)
class Peer:
    """One entry of `from`/`to`: an ipBlock, or pod and/or namespace selectors."""

    pod_selector: selectors.LabelSelector | None = None
    namespace_selector: selectors.LabelSelector | None = None
    ip_block: IpBlock | None = None


@dataclass(frozen=True)
class PolicyRule:
    """One ingress or egress rule. Empty `peers` match every peer, empty `ports` every port."""

    peers: tuple[Peer, ...] = ()
    ports: tuple[PolicyPort, ...] = ()


@dataclass(frozen=True)
class NetworkPolicy:
    """A NetworkPolicy after defaulting. `isolates_*` is `policyTypes` containing the direction."""

    namespace: str
    name: str
    pod_selector: selectors.LabelSelector
    ingress: tuple[PolicyRule, ...] = ()
    egress: tuple[PolicyRule, ...] = ()
    isolates_ingress: bool = True
    isolates_egress: bool = False

    @property
    def ref(self) -> str:
        """`namespace/name`, how reasons name the policy."""
        return f"{self.namespace}/{self.name}"

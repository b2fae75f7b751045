"""The estate: everything policy is computed from, as one immutable value.

Workloads, label rules, IP lists, services, tiers, rules, invariants and the settings that keep the data plane
safe (control-plane endpoints that are never blocked, the quarantine allow list). Built by the
policy-file loader or the server; consumed by the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from microseg.model import addresses
from microseg.model.invariants import Invariant
from microseg.model.iplists import IpList
from microseg.model.labelrules import LabelRule
from microseg.model.rules import Rule
from microseg.model.services import PortRange, Protocol, Service
from microseg.model.tiers import BUILTIN_TIERS, Tier
from microseg.model.workloads import Workload


@dataclass(frozen=True, order=True)
class Endpoint:
    """An address:port the data plane must always allow (the agent's control-plane channel)."""

    network: addresses.Network
    port: PortRange
    protocol: Protocol = Protocol.TCP

    def __str__(self) -> str:
        return f"{self.network} {self.port}/{self.protocol.value}"


@dataclass(frozen=True)
class Estate:
    """Inventory plus policy. Names are unique per kind; the loader and engine check references."""

    workloads: tuple[Workload, ...] = ()
    label_rules: tuple[LabelRule, ...] = ()
    ip_lists: tuple[IpList, ...] = ()
    services: tuple[Service, ...] = ()
    tiers: tuple[Tier, ...] = BUILTIN_TIERS
    rules: tuple[Rule, ...] = ()
    control_plane: tuple[Endpoint, ...] = ()
    quarantine_allow: str | None = None
    """Name of the IP list (forensics, management) a quarantined workload may still talk to."""
    invariants: tuple[Invariant, ...] = ()
    """Reachability statements every provisioned version must keep (checked, never enforced)."""
    version: str = "draft"
    """Policy version label carried into ruleset documents."""
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    def workload(self, name: str) -> Workload | None:
        """The workload called `name`, if any."""
        return next((w for w in self.workloads if w.name == name), None)

    def with_workloads(self, workloads: tuple[Workload, ...]) -> Estate:
        """The same policy over other workloads."""
        return replace(self, workloads=workloads)

    def with_rules(self, rules: tuple[Rule, ...]) -> Estate:
        """The same inventory under other rules."""
        return replace(self, rules=rules)


def rule_changes(old: Estate, new: Estate) -> dict[str, list[str]]:
    """Rule references added, removed or changed between two estates (what a diff lists first)."""
    before, after = {r.ref: r for r in old.rules}, {r.ref: r for r in new.rules}
    return {
        "added": sorted(after.keys() - before.keys()),
        "removed": sorted(before.keys() - after.keys()),
        "changed": sorted(k for k in before.keys() & after.keys() if before[k] != after[k]),
    }

"""Who owns which address: the check that keeps every address in one workload.

`AddressOwners` is built from the stored workloads (through the runtime's workload cache) by the
service when a workload is written; host addresses are a dict lookup, networks of unmanaged
workloads a short scan, so applying thousands of workloads stays linear. `StoredOwners` asks the
store's address index instead (two indexed reads per address): what enrollment and heartbeats use,
so one agent's claim does not read every workload.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from microseg.model import addresses, workloads
from microseg.server import compose
from microseg.store import objects


class AddressOwners:
    """Addresses of a set of workloads, and who holds each."""

    def __init__(self, found: Iterable[workloads.Workload] = ()) -> None:
        self.hosts: dict[addresses.Network, str] = {}
        self.networks: dict[addresses.Network, str] = {}
        for w in found:
            self.add(w)

    def add(self, w: workloads.Workload) -> None:
        """Record a workload's addresses."""
        for net in w.addresses:
            (self.hosts if net.num_addresses == 1 else self.networks)[net] = w.name

    def remove(self, w: workloads.Workload) -> None:
        """Forget a workload's addresses."""
        for net in w.addresses:
            for table in (self.hosts, self.networks):
                if table.get(net) == w.name:
                    del table[net]

    def check(self, w: workloads.Workload) -> None:
        """InvalidError when an address of `w` belongs to another workload."""
        for net in w.addresses:
            owner = self.owner(net, w.name)
            if owner is not None:
                raise compose.InvalidError(
                    [
                        {
                            "object": f"Workload/{w.name}",
                            "field": "spec.addresses",
                            "message": f"address {net} overlaps workload {owner}; an "
                            "address belongs to one workload only",
                        }
                    ]
                )

    def owner(self, net: addresses.Network, me: str) -> str | None:
        """The workload other than `me` holding (or overlapping) `net`, if any."""
        owner = self.hosts.get(net)
        if owner is not None and owner != me:
            return owner
        for other, name in self.networks.items():
            if name != me and other.version == net.version and other.overlaps(net):
                return name
        if net.num_addresses > 1:
            for host, name in self.hosts.items():
                if name != me and host.version == net.version and host.subnet_of(net):  # type: ignore[arg-type]
                    return name
        return None


class StoredOwners:
    """Who holds an address, as the store says inside the caller's transaction."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn

    def owner(self, net: addresses.Network, me: str) -> str | None:
        """The workload other than `me` holding (or overlapping) `net`, if any."""
        return objects.address_holder(self.conn, net, me)

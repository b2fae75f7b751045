"""IP lists: named sets of CIDRs (with exceptions) for what has no labels: partners, the internet,
management networks, legacy ranges. Rules refer to them by name.
"""

from __future__ import annotations

from dataclasses import dataclass

from microseg.errors import ValidationError
from microseg.model import addresses


@dataclass(frozen=True)
class IpList:
    """A named list of CIDRs minus `excepts`."""

    name: str
    cidrs: tuple[addresses.Network, ...]
    excepts: tuple[addresses.Network, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if not self.cidrs:
            raise ValidationError(f"ip list {self.name}: needs at least one CIDR", "cidrs")

    @property
    def networks(self) -> list[addresses.Network]:
        """The CIDRs with the exceptions cut out, collapsed."""
        return addresses.exclude(self.cidrs, self.excepts)

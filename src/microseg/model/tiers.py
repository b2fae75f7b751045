"""Tiers: ordered groups of rules. Inside a tier the first matching rule decides; `pass` and no
match continue with the next tier; after the last tier the default is deny.

The built-in tiers come first in this order unless a policy gives them other orders:
`quarantine` (managed by the quarantine feature), `security` (org-wide guard rails) and
`application` (least-privilege allow rules).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from microseg.errors import ValidationError

QUARANTINE = "quarantine"
SECURITY = "security"
APPLICATION = "application"
DEFAULT = "default"
"""Not a tier: the name used in verdicts and rule references for the final default deny."""

_TIER_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$")


@dataclass(frozen=True, order=True)
class Tier:
    """A tier; lower `order` is evaluated first. Names become nftables chain names, hence short."""

    order: int
    name: str
    description: str = ""

    def __post_init__(self) -> None:
        check_name(self.name)


def check_name(name: str) -> str:
    """`name` when it may name a tier (it becomes nftables chain names, hence short), else a
    ValidationError."""
    if not _TIER_NAME.fullmatch(name) or name == DEFAULT:
        raise ValidationError(
            f"tier name {name!r}: 1-32 lowercase letters, digits and '-', not 'default'", "name"
        )
    return name


BUILTIN_TIERS: tuple[Tier, ...] = (
    Tier(100, QUARANTINE, "Isolates workloads labelled quarantine=true (managed by microseg)"),
    Tier(200, SECURITY, "Organisation-wide guard rails that application rules cannot override"),
    Tier(300, APPLICATION, "Least-privilege allow rules per application"),
)

"""Verdicts: what the one evaluator says about a flow, and why.

A verdict names the decision (allow or deny), the outcome once enforcement modes are applied
(allowed, would-block in alert mode, blocked in enforce mode), the tier and rule that decided, the
labels that made the rule match, the modes of both ends, and notes such as an unchecked process
constraint. A default deny is explained as such, naming the tiers that were walked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from microseg.model import addresses
from microseg.model.workloads import Mode


class Decision(StrEnum):
    """What policy says."""

    ALLOW = "allow"
    DENY = "deny"


class Outcome(StrEnum):
    """What happens on the wire once the enforcement modes of both ends are applied."""

    ALLOWED = "allowed"
    WOULD_BLOCK = "would-block"
    BLOCKED = "blocked"


SYSTEM_TIER = "system"
"""Tier name in verdicts for what the data plane always allows (loopback, the control plane)."""


@dataclass(frozen=True)
class Endpoint:
    """One side of a flow: an address, and the workload that owns it when there is one."""

    address: addresses.Address
    workload: str | None = None
    network: addresses.Network | None = field(default=None, compare=False)
    """The CIDR the endpoint stands for, when it was asked for by the name of a workload known by
    a CIDR (an unmanaged network): shown instead of the one address evaluated in it."""

    def __str__(self) -> str:
        if not self.workload:
            return str(self.address)
        shown = self.network if self.network is not None and self.network.num_addresses > 1 else self.address
        return f"{self.workload} ({shown})"


@dataclass(frozen=True)
class Verdict:
    """The evaluator's answer for one flow."""

    decision: Decision
    outcome: Outcome
    tier: str | None
    rule: str | None
    reason: str
    source_labels_matched: tuple[str, ...] = ()
    destination_labels_matched: tuple[str, ...] = ()
    source_mode: Mode | None = None
    destination_mode: Mode | None = None
    notes: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        """Whether the flow gets through on the wire (allow, or deny in alert/visibility mode)."""
        return self.outcome is not Outcome.BLOCKED

    def to_dict(self) -> dict[str, Any]:
        """JSON form for `-o json` and the API."""
        return {
            "decision": self.decision.value,
            "outcome": self.outcome.value,
            "tier": self.tier,
            "rule": self.rule,
            "reason": self.reason,
            "sourceLabelsMatched": list(self.source_labels_matched),
            "destinationLabelsMatched": list(self.destination_labels_matched),
            "sourceMode": self.source_mode.value if self.source_mode else None,
            "destinationMode": self.destination_mode.value if self.destination_mode else None,
            "notes": list(self.notes),
        }

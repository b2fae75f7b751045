"""Rules: `from` peers -> `to` peers on services, with an action, in a tier at a priority.

A rule is a statement about flows, not about hosts: the engine applies it on the destination's
ingress and on the source's egress, and both agree because both come from this one statement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from microseg.errors import ValidationError
from microseg.model.selectors import AnyPeer, Peer
from microseg.model.services import Service

_RULE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9_.]{0,62}[a-z0-9])?$")


class Action(StrEnum):
    """What a matching rule does: allow, deny, or pass to the next tier."""

    ALLOW = "allow"
    DENY = "deny"
    PASS = "pass"


def check_name(name: str) -> str:
    """`name` when it may name a rule (it becomes part of nftables comments and log prefixes, hence
    stricter than `model.names`), else a ValidationError."""
    if not _RULE_NAME.fullmatch(name):
        raise ValidationError(f"rule name {name!r}: 1-64 lowercase letters, digits, '-', '_', '.'", "name")
    return name


@dataclass(frozen=True)
class Rule:
    """One rule. `name` is unique in its tier; `ref` (tier/name) is unique in the estate."""

    name: str
    tier: str
    priority: int
    action: Action
    sources: tuple[Peer, ...]
    destinations: tuple[Peer, ...]
    services: tuple[Service, ...]
    not_before: datetime | None = None
    not_after: datetime | None = None
    owner: str = ""
    reason: str = ""
    policy: str = ""
    enabled: bool = True

    def __post_init__(self) -> None:
        check_name(self.name)
        if not self.sources:
            raise ValidationError(f"rule {self.name}: `from` needs at least one peer (use `any`)", "from")
        if not self.destinations:
            raise ValidationError(f"rule {self.name}: `to` needs at least one peer (use `any`)", "to")
        if not self.services:
            raise ValidationError(f"rule {self.name}: needs services (use `any`)", "services")
        for moment, field in ((self.not_before, "notBefore"), (self.not_after, "notAfter")):
            if moment is not None and moment.tzinfo is None:
                raise ValidationError(f"rule {self.name}: {field} needs a time zone (e.g. Z)", field)
        if self.not_before and self.not_after and instant(self.not_before) >= instant(self.not_after):
            raise ValidationError(f"rule {self.name}: notBefore must be earlier than notAfter", "notAfter")

    @property
    def ref(self) -> str:
        """The estate-wide reference `tier/name` that counters, logs and verdicts carry."""
        return f"{self.tier}/{self.name}"

    def active_at(self, moment: datetime) -> bool:
        """Whether the rule is enabled and inside its time window [notBefore, notAfter) at `moment`."""
        return self.active_at_instant(instant(moment))

    def active_at_instant(self, at: int) -> bool:
        """`active_at` for an instant in microseconds since the epoch (see `instant`)."""
        if not self.enabled:
            return False
        if self.not_before is not None and at < instant(self.not_before):
            return False
        return self.not_after is None or at < instant(self.not_after)

    @property
    def any_source(self) -> bool:
        """Whether `from` contains `any`."""
        return any(isinstance(p, AnyPeer) for p in self.sources)

    @property
    def any_destination(self) -> bool:
        """Whether `to` contains `any`."""
        return any(isinstance(p, AnyPeer) for p in self.destinations)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def instant(moment: datetime) -> int:
    """Microseconds since the epoch: the instant `moment` stands for, exactly.

    Windows compare instants, as the data plane's `meta time` does: a moment's time zone never
    changes a verdict. (Python compares two datetimes that share a zone by their wall clocks,
    ignoring `fold`: the two 01:30s of the hour that repeats when DST ends would compare equal.)
    A naive moment is local time, as in `datetime.timestamp`.
    """
    aware = moment if moment.tzinfo is not None else moment.astimezone()
    return (aware - _EPOCH) // _MICROSECOND


def epoch(moment: datetime | None) -> int | None:
    """Seconds since the epoch (UTC) for documents and nftables `meta time`."""
    return None if moment is None else int(moment.astimezone(UTC).timestamp())

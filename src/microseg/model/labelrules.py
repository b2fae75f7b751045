"""Label rules: labels that follow attributes ("hostname db-* on linux -> role=db").

Rules are applied in (priority, name) order; a key already set (explicitly on the workload, or by
an earlier rule) is never overwritten, so explicit labels always win and the outcome does not
depend on anything but the rules and the workload.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass

from microseg.errors import ValidationError
from microseg.model import addresses
from microseg.model.labels import Labels
from microseg.model.workloads import Workload


@dataclass(frozen=True)
class LabelRule:
    """When every given condition holds, add `labels` (keys not yet set)."""

    name: str
    labels: Labels
    hostname_glob: str | None = None
    hostname_regex: str | None = None
    os: str | None = None
    cidr: addresses.Network | None = None
    priority: int = 100

    def __post_init__(self) -> None:
        if not any((self.hostname_glob, self.hostname_regex, self.os, self.cidr)):
            raise ValidationError(f"label rule {self.name}: needs at least one condition", "match")
        if self.hostname_regex is not None:
            try:
                re.compile(self.hostname_regex)
            except re.error as exc:
                raise ValidationError(f"label rule {self.name}: bad regex ({exc})", "hostnameRegex") from exc
        if not self.labels:
            raise ValidationError(f"label rule {self.name}: sets no labels", "labels")

    def matches(self, workload: Workload) -> bool:
        """Whether every condition holds for `workload` (hostname defaults to the name)."""
        hostname = workload.attributes.get("hostname", workload.name)
        if self.hostname_glob is not None and not fnmatch.fnmatchcase(hostname, self.hostname_glob):
            return False
        if self.hostname_regex is not None and not re.fullmatch(self.hostname_regex, hostname):
            return False
        if self.os is not None and workload.attributes.get("os", "").lower() != self.os.lower():
            return False
        return self.cidr is None or any(
            net.version == self.cidr.version and net.subnet_of(self.cidr)  # type: ignore[arg-type]
            for net in workload.addresses
        )


def effective_labels(workload: Workload, rules: Iterable[LabelRule]) -> Labels:
    """The workload's labels plus what matching label rules add, explicit keys first."""
    result = dict(workload.labels)
    for rule in sorted(rules, key=lambda r: (r.priority, r.name)):
        if rule.matches(workload):
            for key, value in rule.labels.items():
                result.setdefault(key, value)
    return Labels(result)

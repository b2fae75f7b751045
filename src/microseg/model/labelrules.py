"""Label rules: labels that follow attributes ("hostname db-* on linux -> role=db").

Rules are applied in (priority, name) order; a key already set (explicitly on the workload, or by
an earlier rule) is never overwritten, so explicit labels always win and the outcome does not
depend on anything but the rules and the workload.

A rule trusts some provenances of attributes (`Workload.attribute_sources`); by default operators
and enrollment, not agents: one stolen agent credential must not buy `role=db` by reporting the
hostname `h1-db-1`. A hostname or os condition on an attribute from an untrusted source does not
hold. `cidr` conditions read addresses, which have no provenance here: what an agent may claim is
restricted where it reports them (its enrollment token's ranges, never another workload's address).
Fed by workloads and rules; read by the engine (effective labels feed the label index), the server's
listings and the Kubernetes exports.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass

from microseg.errors import ValidationError
from microseg.model import addresses
from microseg.model.labels import Labels
from microseg.model.workloads import Provenance, Workload

DEFAULT_TRUST = frozenset({Provenance.OPERATOR.value, Provenance.ENROLLMENT.value})
"""What a rule trusts unless it says otherwise: everything but an agent's own word."""


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
    trust: frozenset[str] = DEFAULT_TRUST
    """Provenances whose attributes the conditions may read (see `workloads.Provenance`)."""

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
        self._check_trust()

    def _check_trust(self) -> None:
        known = [p.value for p in Provenance]
        wrong = sorted(set(self.trust) - set(known))
        if wrong or not self.trust:
            raise ValidationError(
                f"label rule {self.name}: trust names {', '.join(wrong) or 'no source'}; "
                f"sources are {', '.join(known)}",
                "trust",
            )
        object.__setattr__(self, "trust", frozenset(Provenance(t).value for t in self.trust))

    def matches(self, workload: Workload) -> bool:
        """Whether every condition holds for `workload`, reading only trusted attributes."""
        if not self._hostname_holds(workload):
            return False
        if self.os is not None and (self._trusted(workload, "os") or "").lower() != self.os.lower():
            return False
        return self.cidr is None or any(
            net.version == self.cidr.version and net.subnet_of(self.cidr)  # type: ignore[arg-type]
            for net in workload.addresses
        )

    def _hostname_holds(self, workload: Workload) -> bool:
        if self.hostname_glob is None and self.hostname_regex is None:
            return True
        hostname = self._hostname(workload)
        if hostname is None:
            return False
        if self.hostname_glob is not None and not fnmatch.fnmatchcase(hostname, self.hostname_glob):
            return False
        return self.hostname_regex is None or re.fullmatch(self.hostname_regex, hostname) is not None

    def _trusted(self, workload: Workload, attribute: str) -> str | None:
        """The attribute's value when it is present and its source trusted."""
        value = workload.attributes.get(attribute)
        return value if value is not None and workload.source_of(attribute) in self.trust else None

    def _hostname(self, workload: Workload) -> str | None:
        """The trusted hostname; a workload without one is known by the name an operator gave it.
        An untrusted hostname does not fall back to the name: the same agent chose that name."""
        if "hostname" in workload.attributes:
            return self._trusted(workload, "hostname")
        return workload.name if Provenance.OPERATOR in self.trust else None


def effective_labels(workload: Workload, rules: Iterable[LabelRule]) -> Labels:
    """The workload's labels plus what matching label rules add, explicit keys first."""
    result = dict(workload.labels)
    for rule in sorted(rules, key=lambda r: (r.priority, r.name)):
        if rule.matches(workload):
            for key, value in rule.labels.items():
                result.setdefault(key, value)
    # the workload's own set when no rule added a key: no second copy per workload to check
    return workload.labels if len(result) == len(workload.labels) else Labels(result)

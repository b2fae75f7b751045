"""Selectors: which workloads (or addresses) a rule side is about.

`LabelSelector` is the Kubernetes label selector (matchLabels + matchExpressions with In, NotIn,
Exists, DoesNotExist). A rule side is a tuple of `Peer`s, any of which may match:

- `SelectorPeer`: workloads whose labels match a label selector;
- `IpListPeer`: the addresses of a named IP list (resolved by the engine; unknown -> matches nothing);
- `CidrPeer`: literal CIDRs with optional `except` carve-outs;
- `AnyPeer`: everything, written explicitly as `any` (an empty selector is not "any").

This module matches labels only; which addresses a peer stands for is the engine's job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from microseg.errors import ValidationError
from microseg.model import addresses, labels


class Operator(StrEnum):
    """matchExpressions operators, spelled as Kubernetes spells them."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


@dataclass(frozen=True, order=True)
class Requirement:
    """One matchExpressions entry (matchLabels entries become `key In (value)`)."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        labels.check_key(self.key)
        has_values = self.operator in (Operator.IN, Operator.NOT_IN)
        if has_values and not self.values:
            raise ValidationError(f"{self.key} {self.operator.value}: needs at least one value", "values")
        if not has_values and self.values:
            raise ValidationError(f"{self.key} {self.operator.value}: takes no values", "values")
        for value in self.values:
            labels.check_value(self.key, value)
        object.__setattr__(self, "values", tuple(sorted(set(self.values))))

    def matches(self, labelset: Mapping[str, str]) -> bool:
        """Kubernetes semantics: NotIn and DoesNotExist match when the key is absent."""
        value = labelset.get(self.key)
        if self.operator is Operator.IN:
            return value is not None and value in self.values
        if self.operator is Operator.NOT_IN:
            return value is None or value not in self.values
        if self.operator is Operator.EXISTS:
            return value is not None
        return value is None

    def __str__(self) -> str:
        if self.operator is Operator.IN and len(self.values) == 1:
            return f"{self.key}={self.values[0]}"
        if self.operator is Operator.NOT_IN and len(self.values) == 1:
            return f"{self.key}!={self.values[0]}"
        if self.operator is Operator.EXISTS:
            return self.key
        if self.operator is Operator.DOES_NOT_EXIST:
            return f"!{self.key}"
        word = "in" if self.operator is Operator.IN else "notin"
        return f"{self.key} {word} ({','.join(self.values)})"


@dataclass(frozen=True)
class LabelSelector:
    """A conjunction of requirements. The empty selector matches every workload."""

    requirements: tuple[Requirement, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "requirements", tuple(sorted(set(self.requirements))))

    @classmethod
    def of(
        cls,
        match_labels: Mapping[str, str] | None = None,
        match_expressions: tuple[Requirement, ...] = (),
    ) -> LabelSelector:
        """Build from Kubernetes' two fields."""
        reqs = [Requirement(k, Operator.IN, (v,)) for k, v in (match_labels or {}).items()]
        return cls((*reqs, *match_expressions))

    @classmethod
    def parse(cls, text: str) -> LabelSelector:
        """Parse the kubectl `-l` syntax: `env=prod,tier!=web,app in (a,b),!quarantine,team`."""
        return cls(tuple(_parse_requirement(part) for part in _split_top_level(text)))

    def matches(self, labelset: Mapping[str, str]) -> bool:
        """True when every requirement holds."""
        return all(r.matches(labelset) for r in self.requirements)

    def matched_by(self, labelset: Mapping[str, str]) -> tuple[str, ...]:
        """The requirements, as text, that `labelset` satisfies (for explanations)."""
        return tuple(str(r) for r in self.requirements if r.matches(labelset))

    @property
    def keys(self) -> frozenset[str]:
        """Label keys this selector looks at."""
        return frozenset(r.key for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements) or "<all workloads>"


_REQ = re.compile(
    r"^\s*(?:(?P<not>!)\s*(?P<nkey>[^\s=!(),]+)"
    r"|(?P<key>[^\s=!(),]+)\s*(?:(?P<op>==|=|!=)\s*(?P<val>[^\s,()]*)"
    r"|\s+(?P<word>in|notin)\s*\((?P<vals>[^()]*)\))?)\s*$"
)


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p for p in (p.strip() for p in parts) if p]


def _parse_requirement(part: str) -> Requirement:
    m = _REQ.match(part)
    if not m:
        raise ValidationError(f"cannot parse selector term {part!r}")
    if m["not"]:
        return Requirement(m["nkey"], Operator.DOES_NOT_EXIST)
    key = m["key"]
    if m["op"]:
        op = Operator.NOT_IN if m["op"] == "!=" else Operator.IN
        return Requirement(key, op, (m["val"],))
    if m["word"]:
        # Kubernetes: a set holds possibly empty identifiers, so `()` and `(a,)` include "".
        values = tuple(v.strip() for v in m["vals"].split(","))
        return Requirement(key, Operator.IN if m["word"] == "in" else Operator.NOT_IN, values)
    return Requirement(key, Operator.EXISTS)


@dataclass(frozen=True)
class SelectorPeer:
    """Workloads whose (effective) labels match `selector`."""

    selector: LabelSelector

    def __str__(self) -> str:
        return f"{{{self.selector}}}"


@dataclass(frozen=True)
class IpListPeer:
    """The addresses of the IP list `name`."""

    name: str

    def __str__(self) -> str:
        return f"iplist:{self.name}"


@dataclass(frozen=True)
class CidrPeer:
    """Literal CIDRs minus `excepts`."""

    cidrs: tuple[addresses.Network, ...]
    excepts: tuple[addresses.Network, ...] = ()

    def __post_init__(self) -> None:
        if not self.cidrs:
            raise ValidationError("a cidr peer needs at least one CIDR", "cidr")
        for cut in self.excepts:
            if not any(cut.version == c.version and cut.subnet_of(c) for c in self.cidrs):  # type: ignore[arg-type]
                raise ValidationError(f"except {cut} is not inside any of {', '.join(map(str, self.cidrs))}")

    @property
    def networks(self) -> list[addresses.Network]:
        """The CIDRs with the exceptions cut out."""
        return addresses.exclude(self.cidrs, self.excepts)

    def __str__(self) -> str:
        text = ",".join(map(str, self.cidrs))
        return f"cidr:{text}" + (f" except {','.join(map(str, self.excepts))}" if self.excepts else "")


@dataclass(frozen=True)
class AnyPeer:
    """Every address, managed or not."""

    def __str__(self) -> str:
        return "any"


Peer = SelectorPeer | IpListPeer | CidrPeer | AnyPeer

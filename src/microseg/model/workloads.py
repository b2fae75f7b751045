"""Workloads: anything with addresses that policy is about.

A workload has a stable name (unique in an estate), a kind, addresses (host addresses are /32 or
/128; an `unmanaged` device may be known by wider CIDRs), free labels, reported attributes
(hostname, os, ...) with who said each one (its provenance) and an enforcement mode: `visibility`
unless someone set one, so that a workload declared before its agent exists does not block
anything (DNS, NTP, admin SSH) the moment that agent first starts. Effective
labels (explicit labels plus those derived by label rules) are computed by
`microseg.model.labelrules`, not stored here; a label rule decides which provenances it trusts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from microseg.errors import ValidationError
from microseg.model import addresses as ip
from microseg.model.labels import Labels


class WorkloadKind(StrEnum):
    """What a workload is; `unmanaged` has no agent and is known by its addresses only."""

    HOST = "host"
    VM = "vm"
    CONTAINER = "container"
    POD = "pod"
    UNMANAGED = "unmanaged"


class Mode(StrEnum):
    """Enforcement mode: visibility observes, alert logs what would be blocked, enforce blocks."""

    VISIBILITY = "visibility"
    ALERT = "alert"
    ENFORCE = "enforce"


class Provenance(StrEnum):
    """Who said an attribute is so. An agent's own word is the weakest: whoever holds one agent's
    credential can report any hostname or OS for that workload."""

    OPERATOR = "operator"
    """Written by a person or a tool with an API token (also: no source recorded)."""
    ENROLLMENT = "enrollment"
    """Reported by an agent as it enrolled onto a workload an admin had bound to its enrollment
    token: the admin vouched for that host beforehand."""
    AGENT = "agent"
    """Reported by the workload's agent on its own (hostname, os, kernel in its inventory)."""


QUARANTINE_LABEL = "quarantine"
"""A workload labelled `quarantine=true` or `quarantine=full` is isolated by the built-in
quarantine tier; `true` keeps the forensics/management IP list (Settings `quarantineAllow`)."""
QUARANTINE_FORENSICS = "true"
QUARANTINE_FULL = "full"
QUARANTINE_LEVELS = {"forensics": QUARANTINE_FORENSICS, "full": QUARANTINE_FULL}
"""Quarantine level (as the API names it) -> the label value that means it."""


def quarantine_level(labels: Mapping[str, str]) -> str | None:
    """The `quarantine` label's value when it quarantines (`true` or `full`), else None. Pass the
    effective labels: a label rule that adds `quarantine=true` quarantines as much as an explicit one."""
    value = labels.get(QUARANTINE_LABEL)
    return value if value in (QUARANTINE_FORENSICS, QUARANTINE_FULL) else None


@dataclass(frozen=True)
class Workload:
    """One workload. Equality is by value; the engine keys workloads by `name`."""

    name: str
    kind: WorkloadKind = WorkloadKind.VM
    addresses: tuple[ip.Network, ...] = ()
    labels: Labels = field(default_factory=Labels)
    attributes: Mapping[str, str] = field(default_factory=dict)
    mode: Mode = Mode.VISIBILITY
    attribute_sources: Mapping[str, str] = field(default_factory=dict)
    """Attribute name -> its Provenance value; an attribute not named here came from an operator.
    A source for an attribute the workload does not have is kept and means nothing."""
    mode_declared: bool = field(default=False, compare=False)
    """Whether someone wrote `visibility` as the mode rather than leaving it unset. Any other mode is
    always someone's decision; an unset one is written nowhere, so an enrolling agent's token may
    set it."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValidationError("a workload needs a name", "name")
        if not self.addresses:
            raise ValidationError(f"workload {self.name}: needs at least one address", "addresses")
        if self.kind is not WorkloadKind.UNMANAGED:
            for net in self.addresses:
                if net.num_addresses != 1:
                    raise ValidationError(
                        f"workload {self.name}: {net} is a network; only unmanaged workloads may have CIDRs",
                        "addresses",
                    )
        object.__setattr__(self, "addresses", tuple(sorted(set(self.addresses), key=_net_key)))
        object.__setattr__(self, "attributes", dict(sorted(self.attributes.items())))
        object.__setattr__(self, "attribute_sources", _checked_sources(self.name, self.attribute_sources))

    def __hash__(self) -> int:
        return hash((self.name, self.kind, self.addresses, self.labels, self.mode))

    @property
    def managed(self) -> bool:
        """Whether an agent enforces on this workload."""
        return self.kind is not WorkloadKind.UNMANAGED

    @property
    def quarantined(self) -> bool:
        """Whether the workload's own labels carry `quarantine=true` or `quarantine=full` (label
        rules may quarantine it too: see `mode_under`)."""
        return quarantine_level(self.labels) is not None

    @property
    def effective_mode(self) -> Mode:
        """The mode its agent applies, judged on its own labels only (`mode_under` for the
        effective labels, which is what the engine uses)."""
        return self.mode_under(self.labels)

    def mode_under(self, effective: Mapping[str, str]) -> Mode:
        """The mode its agent applies when its effective labels are `effective`: a quarantine
        always enforces, whether the label is explicit or added by a label rule."""
        return Mode.ENFORCE if quarantine_level(effective) is not None else self.mode

    @property
    def mode_set(self) -> bool:
        """Whether the mode is someone's decision (a policy file writes it) or the unset default."""
        return self.mode_declared or self.mode is not Mode.VISIBILITY

    def source_of(self, attribute: str) -> Provenance:
        """Who said `attribute` (operator when nobody recorded a source)."""
        return Provenance(self.attribute_sources.get(attribute, Provenance.OPERATOR))

    def with_labels(self, new: Labels) -> Workload:
        """The same workload with other labels."""
        return replace(self, labels=new)

    def with_addresses(self, new: tuple[ip.Network, ...]) -> Workload:
        """The same workload with other addresses."""
        return replace(self, addresses=new)


def first_start_modes(found: Iterable[Workload]) -> dict[Mode, list[str]]:
    """Managed workloads that block or alert from the moment their first agent starts, by mode
    (sorted names); visibility is left out, as is every unmanaged workload (no agent)."""
    out: dict[Mode, list[str]] = {Mode.ENFORCE: [], Mode.ALERT: []}
    for w in found:
        if w.managed and w.effective_mode in out:
            out[w.effective_mode].append(w.name)
    return {mode: sorted(names) for mode, names in out.items()}


def _checked_sources(name: str, sources: Mapping[str, str]) -> dict[str, str]:
    known = [p.value for p in Provenance]
    for attribute, source in sources.items():
        if source not in known:
            raise ValidationError(
                f"workload {name}: attribute {attribute} has source {source!r}; "
                f"sources are {', '.join(known)}",
                "attributeSources",
            )
    return {k: Provenance(v).value for k, v in sorted(sources.items())}


def _net_key(net: ip.Network) -> tuple[int, int, int]:
    return (net.version, int(net.network_address), net.prefixlen)

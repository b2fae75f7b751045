"""The rule book: every rule of an estate in evaluation order, as bit positions.

Fed by the estate (rules, tiers, IP lists, quarantine settings); feeds the label index (which
selectors exist), the compiler (which entries a rule becomes) and the evaluator (which rules can
match a flow). Rule i of the book is bit i of every mask, so "rules whose `from` matches this
workload" is one integer, and candidate rules for a flow are one AND.

What it deliberately does not do: match workloads (the label index does) or know addresses of
workloads (address sets do). It fails closed: a rule in an unknown tier, or naming an unknown IP
list, is left out or matches nothing, never everything; each such case is listed in `problems`.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from microseg.engine import address_index, port_index, time_slices
from microseg.model import addresses, rules, ruleset, selectors, services, tiers
from microseg.model.estate import Estate
from microseg.model.workloads import QUARANTINE_FORENSICS, QUARANTINE_FULL, QUARANTINE_LABEL, quarantine_level

QUARANTINED = selectors.LabelSelector(
    (selectors.Requirement(QUARANTINE_LABEL, selectors.Operator.IN, (QUARANTINE_FORENSICS, QUARANTINE_FULL)),)
)
FORENSICS_KEPT = selectors.LabelSelector.of({QUARANTINE_LABEL: QUARANTINE_FORENSICS})
"""Quarantined at the level that keeps the forensics list (`full` keeps nothing but the agent's channel)."""
QUARANTINED_FULL = selectors.LabelSelector.of({QUARANTINE_LABEL: QUARANTINE_FULL})
"""Quarantined at the level that keeps nothing: a document of a `true` host refuses these peers
before its forensics allowance (see `compiler.keep_quarantine`)."""
FORENSICS_IN = f"{tiers.QUARANTINE}/allow-forensics-in"
FORENSICS_OUT = f"{tiers.QUARANTINE}/allow-forensics-out"
ISOLATE_IN = f"{tiers.QUARANTINE}/isolate-in"


@dataclass(frozen=True)
class PeerRef:
    """One peer of a rule side, reduced to what matching needs."""

    set_name: str | None
    """Address set standing for this peer; None for `any`."""
    selector: selectors.LabelSelector | None = None
    """For selector peers: the selector (matched against labels by the label index)."""
    networks: tuple[addresses.Network, ...] = ()
    """For IP list and CIDR peers: the static addresses."""
    text: str = ""
    """How explanations name this peer."""


@dataclass(frozen=True)
class BookRule:
    """A rule at its place in the book, with both sides reduced to peer refs."""

    index: int
    rule: rules.Rule
    sources: tuple[PeerRef, ...]
    destinations: tuple[PeerRef, ...]

    @property
    def bit(self) -> int:
        """This rule's bit in every mask."""
        return 1 << self.index

    @property
    def timed(self) -> bool:
        """Whether the rule has a time window (its verdicts depend on the clock)."""
        return self.rule.not_before is not None or self.rule.not_after is not None


AddressIndex = address_index.AddressIndex[PeerRef]
"""One rule side's IP-list and CIDR peers, by address."""

PortMatcher = port_index.PortMatcher
"""Per protocol the port ranges a rule's services cover (empty: every port); None: every protocol."""


def port_matcher(rule: rules.Rule) -> PortMatcher:
    """The union of a rule's services as a lookup, equal to `any(s.matches(...) for s in services)`."""
    ranges: dict[services.Protocol, set[tuple[int, int]] | None] = {}
    for svc in rule.services:
        for spec in svc.specs:
            if spec.protocol is services.Protocol.ANY:
                return None
            if not spec.ports:
                ranges[spec.protocol] = None
            elif ranges.get(spec.protocol, set()) is not None:
                ranges.setdefault(spec.protocol, set()).update((r.first, r.last) for r in spec.ports)  # type: ignore[union-attr]
    return {proto: () if rs is None else tuple(sorted(rs)) for proto, rs in ranges.items()}


def ports_match(matcher: PortMatcher, protocol: services.Protocol, port: int | None) -> bool:
    """Whether a connection's protocol and destination port are covered."""
    if matcher is None:
        return True
    ranges = matcher.get(protocol)
    if ranges is None:
        return False
    return not ranges or (port is not None and any(lo <= port <= hi for lo, hi in ranges))


def selector_key(selector: selectors.LabelSelector) -> str:
    """The canonical text of a selector; equal selectors share one key, one set, one index entry."""
    return str(selector)


def selector_set_name(selector: selectors.LabelSelector) -> str:
    """Deterministic, short set name for a selector (hash of its canonical text)."""
    return "sel_" + hashlib.sha256(selector_key(selector).encode()).hexdigest()[:10]


def _named_set(prefix: str, name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_]", "_", name)[:16]
    return f"{prefix}_{safe}_{hashlib.sha256(name.encode()).hexdigest()[:6]}"


class RuleBook:
    """Ordered rules plus the masks the compiler and evaluator share."""

    def __init__(self, estate: Estate) -> None:
        self.problems: list[str] = []
        self.tiers: tuple[str, ...] = tuple(t.name for t in sorted(estate.tiers))
        self._ip_lists = {i.name: i for i in estate.ip_lists}
        self.static_sets: dict[str, ruleset.AddressSet] = {}
        self.selectors: dict[str, selectors.LabelSelector] = {}
        ordered = self._order([*_quarantine_rules(estate), *estate.rules])
        self.rules: tuple[BookRule, ...] = tuple(
            BookRule(i, r, self._peers(r, r.sources), self._peers(r, r.destinations))
            for i, r in enumerate(ordered)
        )
        self.tier_masks = self._tier_masks()
        self.port_matchers: tuple[PortMatcher, ...] = tuple(port_matcher(br.rule) for br in self.rules)
        self.timed = any(br.timed for br in self.rules)
        self.forensics_in, self.forensics_out = (self._bit_of(FORENSICS_IN), self._bit_of(FORENSICS_OUT))
        self.forensics_set = next(
            (br.sources[0].set_name for br in self.rules if br.bit == self.forensics_in), None
        )
        """The address set of the forensics list when the estate keeps one for quarantined workloads."""
        if self.forensics_set is not None:
            self.selectors[selector_key(QUARANTINED_FULL)] = QUARANTINED_FULL
        self.src_by_selector, self.src_any, self.src_by_address = self._side_masks(sources=True)
        self.dst_by_selector, self.dst_any, self.dst_by_address = self._side_masks(sources=False)

    def _bit_of(self, ref: str) -> int:
        return next((br.bit for br in self.rules if br.rule.ref == ref), 0)

    def keep_quarantine(
        self,
        candidates: int,
        source: Mapping[str, str] | None,
        destination: Mapping[str, str] | None,
        source_mask: int,
        destination_mask: int,
    ) -> int:
        """`candidates` without the built-in forensics allowances unless each end's own quarantine
        keeps the other: a peer inside the forensics list is not the forensics station when it is
        quarantined itself (`full` keeps nobody; `true` keeps only peers inside the list). An end's
        place in the list is read off its masks: the allowances' list side is the list alone."""
        allowances = self.forensics_in | self.forensics_out
        if not candidates & allowances:
            return candidates
        source_in_list = bool(source_mask & self.forensics_in)
        destination_in_list = bool(destination_mask & self.forensics_out)
        if quarantine_keeps(source, destination_in_list) and quarantine_keeps(destination, source_in_list):
            return candidates
        return candidates & ~allowances

    def _order(self, candidates: list[rules.Rule]) -> list[rules.Rule]:
        position = {name: i for i, name in enumerate(self.tiers)}
        kept = []
        for rule in candidates:
            if not rule.enabled:
                continue
            if rule.tier not in position:
                self.problems.append(
                    f"rule {rule.ref}: unknown tier {rule.tier!r}; rule ignored (fails closed)"
                )
                continue
            kept.append(rule)
        return sorted(kept, key=lambda r: (position[r.tier], r.priority, r.name))

    def _peers(self, rule: rules.Rule, peers: tuple[selectors.Peer, ...]) -> tuple[PeerRef, ...]:
        return tuple(self._peer(rule, p) for p in peers)

    def _peer(self, rule: rules.Rule, peer: selectors.Peer) -> PeerRef:
        if isinstance(peer, selectors.AnyPeer):
            return PeerRef(None, text="any")
        if isinstance(peer, selectors.SelectorPeer):
            self.selectors[selector_key(peer.selector)] = peer.selector
            return PeerRef(selector_set_name(peer.selector), selector=peer.selector, text=str(peer))
        if isinstance(peer, selectors.IpListPeer):
            iplist = self._ip_lists.get(peer.name)
            if iplist is None:
                self.problems.append(f"rule {rule.ref}: unknown ip list {peer.name!r}; it matches nothing")
                nets: tuple[addresses.Network, ...] = ()
            else:
                nets = tuple(iplist.networks)
            return self._static(_named_set("ipl", peer.name), nets, f"ip list {peer.name}", str(peer))
        nets = tuple(peer.networks)
        digest = hashlib.sha256(str(peer).encode()).hexdigest()[:10]
        return self._static(f"net_{digest}", nets, str(peer), str(peer))

    def _static(self, name: str, nets: tuple[addresses.Network, ...], description: str, text: str) -> PeerRef:
        self.static_sets[name] = ruleset.AddressSet(name, nets, description)
        return PeerRef(name, networks=nets, text=text)

    def _tier_masks(self) -> dict[str, int]:
        masks: dict[str, int] = defaultdict(int)
        for br in self.rules:
            masks[br.rule.tier] |= br.bit
        return dict(masks)

    def _side_masks(self, *, sources: bool) -> tuple[dict[str, int], int, list[tuple[PeerRef, int]]]:
        by_selector: dict[str, int] = defaultdict(int)
        any_mask = 0
        by_address: list[tuple[PeerRef, int]] = []
        for br in self.rules:
            for peer in br.sources if sources else br.destinations:
                if peer.set_name is None:
                    any_mask |= br.bit
                elif peer.selector is not None:
                    by_selector[selector_key(peer.selector)] |= br.bit
                else:
                    by_address.append((peer, br.bit))
        return dict(by_selector), any_mask, by_address

    def address_match(self, address: addresses.Address, *, sources: bool) -> tuple[int, frozenset[PeerRef]]:
        """Rules whose source (or destination) side has an IP list or CIDR containing `address`,
        and those peers (explanations name them)."""
        src, dst = self._address_indexes
        return (src if sources else dst).match(address)

    @functools.cached_property
    def ports(self) -> port_index.PortIndex:
        """Rules by the protocol and port their services cover (built on first use, for the evaluator)."""
        return port_index.PortIndex(self.port_matchers)

    @functools.cached_property
    def slices(self) -> time_slices.TimeSlices:
        """Time, cut where rule windows open or close (built on first use, for the evaluator)."""
        return time_slices.TimeSlices(tuple(br.rule for br in self.rules))

    @functools.cached_property
    def _address_indexes(self) -> tuple[AddressIndex, AddressIndex]:
        """Source and destination address peers, indexed on first use (the compiler never asks)."""
        return (
            address_index.AddressIndex((peer, peer.networks, bit) for peer, bit in self.src_by_address),
            address_index.AddressIndex((peer, peer.networks, bit) for peer, bit in self.dst_by_address),
        )


def _quarantine_rules(estate: Estate) -> list[rules.Rule]:
    """Built-in rules of the quarantine tier: keep the forensics list, isolate everything else."""
    target = (selectors.SelectorPeer(QUARANTINED),)
    everything = (selectors.AnyPeer(),)
    any_service = (services.ANY_SERVICE,)
    out: list[rules.Rule] = []
    if estate.quarantine_allow:
        forensics = (selectors.IpListPeer(estate.quarantine_allow),)
        kept = (selectors.SelectorPeer(FORENSICS_KEPT),)
        out += [
            rules.Rule(
                "allow-forensics-in",
                tiers.QUARANTINE,
                -40,
                rules.Action.ALLOW,
                forensics,
                kept,
                any_service,
                reason="quarantined workloads stay reachable from the forensics list",
            ),
            rules.Rule(
                "allow-forensics-out",
                tiers.QUARANTINE,
                -30,
                rules.Action.ALLOW,
                kept,
                forensics,
                any_service,
                reason="quarantined workloads may reach the forensics list",
            ),
        ]
    out += [
        rules.Rule(
            "isolate-in",
            tiers.QUARANTINE,
            -20,
            rules.Action.DENY,
            everything,
            target,
            any_service,
            reason="quarantined: isolated",
        ),
        rules.Rule(
            "isolate-out",
            tiers.QUARANTINE,
            -10,
            rules.Action.DENY,
            target,
            everything,
            any_service,
            reason="quarantined: isolated",
        ),
    ]
    return out


def quarantine_keeps(own: Mapping[str, str] | None, other_in_list: bool) -> bool:
    """Whether an end with labels `own` (None: not a workload) may talk to the other end as far as
    its own quarantine goes: not quarantined, or `true` with the other end in the forensics list."""
    level = quarantine_level(own) if own is not None else None
    return level is None or (level == QUARANTINE_FORENSICS and other_in_list)


def label_keys_used(book: RuleBook) -> frozenset[str]:
    """Label keys any selector looks at (labels outside this set never change a verdict)."""
    return frozenset(k for s in book.selectors.values() for k in s.keys)

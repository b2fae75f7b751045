"""The ruleset compiler: per identity, the ordered ingress and egress entries.

Fed by the rule book (ordered rules and masks) and the label index (selectors an identity
matches); feeds ruleset documents. A rule becomes an ingress entry of identity I when its `to`
side can be I (a selector matching I, `any`, or an address peer -- then the local address must be
in that peer's set), and an egress entry when its `from` side can be I, symmetrically. Entries
refer to address sets by name; who is in a set is not the compiler's business, so re-addressing
a workload recompiles nothing. `on_host` then drops, per workload, the entries whose local side
is only address sets (IP lists, CIDRs) none of the workload's addresses is in: they can never
match on that host, so its document does not carry them.

Entries of one rule are built once per variant and shared by every identity (Cilium's "one
computation per identity", and less).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace

from microseg.engine import rulebook
from microseg.model import rules, ruleset, services
from microseg.model.workloads import QUARANTINE_FORENSICS


@dataclass(frozen=True)
class IdentityRuleset:
    """What one identity's workloads enforce, before address-set members are filled in."""

    ingress: tuple[ruleset.Entry, ...]
    egress: tuple[ruleset.Entry, ...]

    @functools.cached_property
    def local_set_names(self) -> frozenset[str]:
        """The address sets some entry's local side is limited to (see `on_host`)."""
        return frozenset(n for entry in (*self.ingress, *self.egress) for n in entry.local_sets or ())

    @functools.cached_property
    def sorted_set_names(self) -> tuple[str, ...]:
        """`set_names` in name order, as documents list their sets (asked once per document)."""
        return tuple(sorted(self.set_names))

    @functools.cached_property
    def set_names(self) -> frozenset[str]:
        """Every address set the entries refer to (asked when the identity is added and removed,
        and per document)."""
        names: set[str] = set()
        for entry in (*self.ingress, *self.egress):
            names.update(entry.peer_sets or ())
            names.update(entry.local_sets or ())
        return frozenset(names)


def on_host(compiled: IdentityRuleset, held: frozenset[str]) -> IdentityRuleset:
    """The entries of `compiled` that can match on a host whose addresses are in the static sets
    `held`: an entry whose local side is address sets only (a rule's IP-list or CIDR peer, not a
    selector or `any`) stays when the host is in one of them. Per workload, not per identity: two
    workloads with the same labels can sit inside and outside an IP list."""
    if not compiled.local_set_names:
        return compiled

    def can_match(entry: ruleset.Entry) -> bool:
        return entry.local_sets is None or not held.isdisjoint(entry.local_sets)

    return IdentityRuleset(
        tuple(e for e in compiled.ingress if can_match(e)), tuple(e for e in compiled.egress if can_match(e))
    )


def keep_quarantine(compiled: IdentityRuleset, level: str | None, in_list: bool) -> IdentityRuleset:
    """A quarantined host's entries with the forensics allowances narrowed to what its own level
    keeps (the evaluator's `RuleBook.keep_quarantine`, for the agent): `full` keeps none of them;
    `true` keeps the list's side only, refusing first the quarantined peers it may not reach (those
    at `full` when the host is inside the list, every quarantined one when it is not). The
    allowance where the host is the list's side is dropped: what it would still accept, the other
    allowance accepts too."""
    if level is None:
        return compiled
    ingress = _narrowed(compiled.ingress, rulebook.FORENSICS_IN, rulebook.FORENSICS_OUT, level, in_list)
    egress = _narrowed(compiled.egress, rulebook.FORENSICS_OUT, rulebook.FORENSICS_IN, level, in_list)
    return IdentityRuleset(ingress, egress)


def refused_set(level: str | None, in_list: bool) -> str | None:
    """The address set of the quarantined peers a host at `level` refuses before its forensics
    allowance (None when it keeps no allowance, or is not quarantined)."""
    if level != QUARANTINE_FORENSICS:
        return None
    refused = rulebook.QUARANTINED_FULL if in_list else rulebook.QUARANTINED
    return rulebook.selector_set_name(refused)


def _narrowed(
    entries: tuple[ruleset.Entry, ...], kept: str, dropped: str, level: str, in_list: bool
) -> tuple[ruleset.Entry, ...]:
    refused = refused_set(level, in_list)
    out: list[ruleset.Entry] = []
    for entry in entries:
        if entry.ref == dropped or (entry.ref == kept and refused is None):
            continue
        if entry.ref == kept and refused is not None:
            deny = rules.Action.DENY
            out.append(
                replace(entry, ref=rulebook.ISOLATE_IN, action=deny, peer_sets=(refused,), local_sets=None)
            )
        out.append(entry)
    return tuple(out)


class RulesetCompiler:
    """Compiles identities against one rule book."""

    def __init__(self, book: rulebook.RuleBook) -> None:
        self._book = book
        self._entry_cache: dict[tuple[int, bool, bool], tuple[ruleset.Entry, ...]] = {}
        self._compiled: dict[frozenset[str], tuple[IdentityRuleset, int]] = {}
        """Identities that match the same selectors enforce the same entries: one compile (and one
        ruleset object) for all of them (4,401 compiles for 5,000 identities in the large bench
        estate), with the number of identities holding it, so that it goes with the last."""
        self._dst_addr = _or(bit for _, bit in book.dst_by_address)
        self._src_addr = _or(bit for _, bit in book.src_by_address)
        """The rules with an address peer on each side (the same for every identity)."""

    def compile(self, matched_selectors: frozenset[str]) -> IdentityRuleset:
        """The ordered entries for an identity matching `matched_selectors`; `release` them when
        the identity goes."""
        found = self._compiled.get(matched_selectors)
        compiled = self._compile(matched_selectors) if found is None else found[0]
        self._compiled[matched_selectors] = (compiled, 1 if found is None else found[1] + 1)
        return compiled

    def release(self, matched_selectors: frozenset[str]) -> None:
        """An identity matching `matched_selectors` is gone: forget its entries with the last one."""
        compiled, holders = self._compiled[matched_selectors]
        if holders == 1:
            del self._compiled[matched_selectors]
        else:
            self._compiled[matched_selectors] = (compiled, holders - 1)

    def _compile(self, matched_selectors: frozenset[str]) -> IdentityRuleset:
        book = self._book
        dst_sel = _or(book.dst_by_selector.get(k, 0) for k in matched_selectors)
        src_sel = _or(book.src_by_selector.get(k, 0) for k in matched_selectors)
        dst_addr, src_addr = self._dst_addr, self._src_addr
        ingress = self._entries(dst_sel | book.dst_any, dst_addr & ~(dst_sel | book.dst_any), ingress=True)
        egress = self._entries(src_sel | book.src_any, src_addr & ~(src_sel | book.src_any), ingress=False)
        return IdentityRuleset(ingress, egress)

    def _entries(self, whole: int, address_only: int, *, ingress: bool) -> tuple[ruleset.Entry, ...]:
        out: list[ruleset.Entry] = []
        candidates = whole | address_only
        while candidates:
            low = candidates & -candidates
            index = low.bit_length() - 1
            candidates ^= low
            key = (index, ingress, bool(whole & low))
            entries = self._entry_cache.get(key)
            if entries is None:
                entries = _rule_entries(self._book.rules[index], ingress, local_any=key[2])
                self._entry_cache[key] = entries
            out.extend(entries)
        return tuple(out)


def _or(values: Iterable[int]) -> int:
    result = 0
    for v in values:
        result |= v
    return result


def _rule_entries(br: rulebook.BookRule, ingress: bool, local_any: bool) -> tuple[ruleset.Entry, ...]:
    rule = br.rule
    peers, locals_ = (br.sources, br.destinations) if ingress else (br.destinations, br.sources)
    peer_sets = None if any(p.set_name is None for p in peers) else _names(peers)
    local_sets = (
        None if local_any else tuple(p.set_name for p in locals_ if p.selector is None and p.set_name)
    )
    return tuple(
        ruleset.Entry(
            ref=rule.ref,
            tier=rule.tier,
            action=rule.action,
            peer_sets=peer_sets,
            local_sets=local_sets,
            ports=ports,
            process=process,
            user=user,
            not_before=rules.epoch(rule.not_before),
            not_after=rules.epoch(rule.not_after),
        )
        for (process, user), ports in _service_groups(rule.services, ingress).items()
    )


def _names(peers: tuple[rulebook.PeerRef, ...]) -> tuple[str, ...]:
    return tuple(sorted({p.set_name for p in peers if p.set_name}))


def _service_groups(
    svcs: tuple[services.Service, ...], ingress: bool
) -> dict[tuple[str | None, str | None], tuple[services.PortSpec, ...]]:
    """Port specs grouped by the process constraint of the enforcing side, in a stable order."""
    groups: dict[tuple[str | None, str | None], set[services.PortSpec]] = defaultdict(set)
    for svc in svcs:
        key = (svc.process, svc.user) if ingress else (svc.client_process, svc.client_user)
        groups[key].update(svc.specs)
    return {
        key: _merge_specs(specs)
        for key, specs in sorted(groups.items(), key=lambda kv: (kv[0][0] or "", kv[0][1] or ""))
    }


def _merge_specs(specs: set[services.PortSpec]) -> tuple[services.PortSpec, ...]:
    if any(s.protocol is services.Protocol.ANY for s in specs):
        return (services.PortSpec(services.Protocol.ANY),)
    by_proto: dict[services.Protocol, set[services.PortRange]] = defaultdict(set)
    whole: set[services.Protocol] = set()
    for spec in specs:
        if spec.ports:
            by_proto[spec.protocol].update(spec.ports)
        else:
            whole.add(spec.protocol)
    out = [services.PortSpec(p) for p in whole]
    out += [services.PortSpec(p, tuple(r)) for p, r in by_proto.items() if p not in whole]
    return tuple(sorted(out))

"""The one evaluator: (source, destination, port, protocol[, process]) -> Verdict.

Fed by the rule book (ordered rules as bits) and the inventory (who owns an address, its labels,
the selectors its identity matches, its mode). Everything that decides "allowed or not" -- the
compiled rulesets, the simulator, the map, `explain` -- must agree with this function; the tests
check the renderers against it.

How it works: the rules whose `from` side can be the source form one bit mask (selectors the
source's identity matches, IP lists / CIDRs holding its address, `any`); likewise for the
destination. Their AND, with the rules active in the moment's time slice and the rules whose
services cover the port (the port index), is the candidate list, already in evaluation order. The
lowest candidate whose service also takes the processes decides; `pass` drops the rest of its tier.
Loopback and the control-plane channel are always allowed (the data plane never blocks them).

Verdicts are cached per (source profile, destination profile, port, protocol, time slice[, processes]):
a profile is what the policy can tell about an endpoint, and between two consecutive window edges
the active rules, hence every verdict, stay the same (`time_slices`); so a cached verdict is the one
the walk would compute again, explanation included. The clock is read only for flows that a rule with
a window could decide (the others' slice is `ALWAYS`), and flows no rule can match are not cached:
their default verdict is one lookup.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol as TypingProtocol

from microseg.engine import rulebook, time_slices
from microseg.model import addresses, labels, rules, services, verdicts
from microseg.model.estate import Endpoint as ControlEndpoint
from microseg.model.workloads import Mode, Workload


class Inventory(TypingProtocol):
    """What the evaluator needs to know about workloads (the engine provides it)."""

    def workload_at(self, address: addresses.Address) -> str | None:
        """Name of the workload holding `address`, if any."""

    def workload(self, name: str) -> Workload:
        """The workload called `name`."""

    def identity(self, name: str) -> labels.Labels:
        """Its security-relevant labels (what selectors can see)."""

    def matched_selectors(self, name: str) -> frozenset[str]:
        """Selector keys its identity matches."""


@dataclass(frozen=True, eq=False, slots=True)
class Profile:
    """Everything the evaluator reads about one endpoint. Interned: endpoints the policy cannot tell
    apart share one Profile object, so verdicts are cached per profile pair (see `VerdictKey`)."""

    src_mask: int
    dst_mask: int
    mode: Mode | None
    labels: labels.Labels | None
    src_peers: frozenset[rulebook.PeerRef]
    dst_peers: frozenset[rulebook.PeerRef]
    on_control_plane: bool
    loopback: bool


VERDICT_CACHE_LIMIT = 1_000_000
"""Cached verdicts before the cache is dropped and refilled (bounds memory on huge probe sets)."""

VerdictKey = tuple[object, ...]
"""Everything a verdict depends on: (source profile, destination profile, port, protocol, time slice
key), plus (process, client process) when either is known."""


class Evaluator:
    """Answers verdicts for one rule book over one inventory."""

    def __init__(
        self,
        book: rulebook.RuleBook,
        inventory: Inventory,
        control_plane: tuple[ControlEndpoint, ...] = (),
    ) -> None:
        self._book = book
        self._inventory = inventory
        self._workload = inventory.workload
        self._control_plane = control_plane
        self._selector_masks: dict[frozenset[str], tuple[int, int]] = {}
        self._address_matches: dict[
            addresses.Address, tuple[int, frozenset[rulebook.PeerRef], int, frozenset[rulebook.PeerRef]]
        ] = {}
        self._profiles: dict[str, tuple[Workload, addresses.Address, Profile]] = {}
        self._outside: dict[addresses.Address, Profile] = {}
        self._interned: dict[tuple[object, ...], Profile] = {}
        self._slices = book.slices
        self._verdicts: dict[VerdictKey, verdicts.Verdict] = {}
        self._defaults: dict[tuple[object, ...], verdicts.Verdict] = {}
        self._reasons: dict[tuple[int, services.Service], str] = {}
        self._matches: dict[tuple[int, bool, Profile], tuple[str, ...]] = {}

    def evaluate(
        self,
        source: verdicts.Endpoint,
        destination: verdicts.Endpoint,
        port: int | None,
        protocol: services.Protocol,
        *,
        process: str | None = None,
        client_process: str | None = None,
        at: datetime | None = None,
    ) -> verdicts.Verdict:
        """The verdict for a new connection from `source` to `destination` at `at` (default: now)."""
        # most callers name the workloads already: skip the address lookup (and the call) for them
        src = source if source.workload is not None else self._resolve(source)
        dst = destination if destination.workload is not None else self._resolve(destination)
        sp, dp = self.profile(src), self.profile(dst)
        if (src.workload is not None and src.workload == dst.workload) or dp.loopback:
            return self._system(sp, dp, "loopback", "loopback: traffic within one host is always allowed")
        if dp.on_control_plane:
            system = self._control_plane_verdict(sp, dp, dst.address, port, protocol)
            if system is not None:
                return system
        both = sp.src_mask & dp.dst_mask
        kept = self._book.keep_quarantine(both, sp.labels, dp.labels, sp.src_mask, dp.dst_mask)
        candidates, moment = self._active(kept, at)
        if not candidates:
            # no rule can match: the default verdict is one lookup, cheaper than remembering the flow
            return self._default_verdict(sp, dp, ())
        key: VerdictKey = (sp, dp, port, protocol, moment)
        if process is not None or client_process is not None:
            key += (process, client_process)
        verdict = self._verdicts.get(key)
        if verdict is None:
            if len(self._verdicts) >= VERDICT_CACHE_LIMIT:
                self._verdicts.clear()
            verdict = self._verdicts[key] = self._decide(
                (sp, dp), (port, protocol), candidates, (process, client_process)
            )
        return verdict

    def _active(self, candidates: int, at: datetime | None) -> tuple[int, int]:
        """The candidates active at `at`, and the key of the time slice holding `at` -- `ALWAYS` when
        no rule with a window is among them, so the clock is read only when a window can matter."""
        if not candidates & self._slices.timed:  # no candidate at all, typically
            return candidates, time_slices.ALWAYS
        now = self._slices.at(at)
        return candidates & now.active, now.key

    def equivalence_key(self, endpoint: verdicts.Endpoint) -> Profile:
        """Endpoints with equal keys get equal verdicts against any third endpoint.

        The matrix and the semantic diff evaluate one representative per key instead of every
        workload (a workload still always reaches itself, which they account for).
        """
        return self.profile(self._resolve(endpoint))

    def _decide(
        self,
        ends: tuple[Profile, Profile],
        connection: tuple[int | None, services.Protocol],
        candidates: int,
        processes: tuple[str | None, str | None],
    ) -> verdicts.Verdict:
        """Walk the active candidates whose services cover the port in book order: the
        first whose service also takes the processes decides, a `pass` drops the rest of its tier."""
        sp, dp = ends
        port, protocol = connection
        book = self._book
        candidates &= book.ports.mask(protocol, port)
        passed: list[str] = []
        while candidates:
            low = candidates & -candidates
            br = book.rules[low.bit_length() - 1]
            rule = br.rule
            svc = _matching_service(rule, protocol, port, *processes)
            if svc is None:
                candidates ^= low
            elif rule.action is rules.Action.PASS:
                passed.append(rule.ref)
                candidates &= ~book.tier_masks[rule.tier]
            else:
                notes = (*_pass_notes(passed), *_process_notes(svc, *processes))
                return self._rule_verdict(br, svc, ends, notes)
        return self._default_verdict(sp, dp, passed)

    # -- endpoints ---------------------------------------------------------------------------

    def _resolve(self, endpoint: verdicts.Endpoint) -> verdicts.Endpoint:
        if endpoint.workload is not None:
            return endpoint
        return verdicts.Endpoint(endpoint.address, self._inventory.workload_at(endpoint.address))

    def profile(self, endpoint: verdicts.Endpoint) -> Profile:
        """The interned profile of a resolved endpoint (recomputed when its workload changed)."""
        name = endpoint.workload
        if name is None:
            outside = self._outside.get(endpoint.address)
            if outside is None:
                outside = self._outside[endpoint.address] = self._build_profile(endpoint, None)
            return outside
        workload = self._workload(name)
        cached = self._profiles.get(name)
        # identity first, then `==`: ipaddress hashing and comparison are slow on the hot path
        if (
            cached is not None
            and cached[0] is workload
            and (cached[1] is endpoint.address or cached[1] == endpoint.address)
        ):
            return cached[2]
        profile = self._build_profile(endpoint, workload)
        self._profiles[name] = (workload, endpoint.address, profile)
        return profile

    def _build_profile(self, endpoint: verdicts.Endpoint, workload: Workload | None) -> Profile:
        book = self._book
        src_mask, dst_mask = book.src_any, book.dst_any
        identity = None
        if workload is not None:
            identity = self._inventory.identity(workload.name)
            sel_src, sel_dst = self._selector_mask(self._inventory.matched_selectors(workload.name))
            src_mask, dst_mask = src_mask | sel_src, dst_mask | sel_dst
        addr = self._address_match(endpoint.address)
        mode = _effective_mode(workload, identity)
        fields = (
            src_mask | addr[0],
            dst_mask | addr[2],
            mode,
            identity,
            addr[1],
            addr[3],
            any(endpoint.address in cp.network for cp in self._control_plane),
            endpoint.address.is_loopback,
        )
        return self._interned.setdefault(fields, Profile(*fields))

    def _selector_mask(self, matched: frozenset[str]) -> tuple[int, int]:
        cached = self._selector_masks.get(matched)
        if cached is None:
            src = dst = 0
            for key in matched:
                src |= self._book.src_by_selector.get(key, 0)
                dst |= self._book.dst_by_selector.get(key, 0)
            cached = self._selector_masks[matched] = (src, dst)
        return cached

    def _address_match(
        self, address: addresses.Address
    ) -> tuple[int, frozenset[rulebook.PeerRef], int, frozenset[rulebook.PeerRef]]:
        cached = self._address_matches.get(address)
        if cached is None:
            src = self._book.address_match(address, sources=True)
            dst = self._book.address_match(address, sources=False)
            cached = self._address_matches[address] = (*src, *dst)
        return cached

    # -- verdicts ----------------------------------------------------------------------------

    def _control_plane_verdict(
        self,
        sp: Profile,
        dp: Profile,
        address: addresses.Address,
        port: int | None,
        protocol: services.Protocol,
    ) -> verdicts.Verdict | None:
        for cp in self._control_plane:
            if (
                address in cp.network
                and (cp.protocol is services.Protocol.ANY or cp.protocol is protocol)
                and (port is None or port in cp.port)
            ):
                return self._system(sp, dp, "control-plane", f"control-plane channel {cp} is never blocked")
        return None

    def _system(self, sp: Profile, dp: Profile, name: str, reason: str) -> verdicts.Verdict:
        return verdicts.Verdict(
            decision=verdicts.Decision.ALLOW,
            outcome=verdicts.Outcome.ALLOWED,
            tier=verdicts.SYSTEM_TIER,
            rule=f"{verdicts.SYSTEM_TIER}/{name}",
            reason=reason,
            source_mode=sp.mode,
            destination_mode=dp.mode,
        )

    def _rule_verdict(
        self,
        br: rulebook.BookRule,
        svc: services.Service,
        ends: tuple[Profile, Profile],
        notes: tuple[str, ...],
    ) -> verdicts.Verdict:
        sp, dp = ends
        rule = br.rule
        decision = verdicts.Decision.ALLOW if rule.action is rules.Action.ALLOW else verdicts.Decision.DENY
        reason = self._reasons.get((br.index, svc))
        if reason is None:
            verb = "allows" if decision is verdicts.Decision.ALLOW else "denies"
            reason = f"rule {rule.ref} {verb} {_side(br.sources)} -> {_side(br.destinations)} on {svc}"
            if rule.reason:
                reason += f" ({rule.reason})"
            self._reasons[(br.index, svc)] = reason
        return verdicts.Verdict(
            decision=decision,
            outcome=_outcome(decision, sp.mode, dp.mode),
            tier=rule.tier,
            rule=rule.ref,
            reason=reason,
            source_labels_matched=self._labels_matched(br, True, sp),
            destination_labels_matched=self._labels_matched(br, False, dp),
            source_mode=sp.mode,
            destination_mode=dp.mode,
            notes=notes,
        )

    def _labels_matched(self, br: rulebook.BookRule, source: bool, profile: Profile) -> tuple[str, ...]:
        """`_matched` for one side of a rule, once per (rule, side, profile): a profile stands for
        every endpoint with its labels and lists, and a verdict cache miss was mostly this (selector
        matching per peer) when one profile pair is asked about many ports or processes."""
        key = (br.index, source, profile)
        found = self._matches.get(key)
        if found is None:
            if len(self._matches) >= VERDICT_CACHE_LIMIT:
                self._matches.clear()
            if source:
                found = _matched(br.sources, profile.labels, profile.src_peers)
            else:
                found = _matched(br.destinations, profile.labels, profile.dst_peers)
            self._matches[key] = found
        return found

    def _default_verdict(self, sp: Profile, dp: Profile, passed: Sequence[str]) -> verdicts.Verdict:
        key = (sp.mode, dp.mode, tuple(passed))
        verdict = self._defaults.get(key)
        if verdict is None:
            verdict = self._defaults[key] = verdicts.Verdict(
                decision=verdicts.Decision.DENY,
                outcome=_outcome(verdicts.Decision.DENY, sp.mode, dp.mode),
                tier=None,
                rule=None,
                reason=f"no rule in tiers {', '.join(self._book.tiers)} matched; default deny",
                source_mode=sp.mode,
                destination_mode=dp.mode,
                notes=_pass_notes(passed),
            )
        return verdict


def _effective_mode(workload: Workload | None, identity: labels.Labels | None) -> Mode | None:
    """None for outside addresses and unmanaged workloads; quarantine always enforces, also when
    a label rule set it (the identity holds the effective `quarantine` label)."""
    if workload is None or not workload.managed or identity is None:
        return None
    return workload.mode_under(identity)


def _matched(
    peers: tuple[rulebook.PeerRef, ...], own: labels.Labels | None, address_peers: frozenset[rulebook.PeerRef]
) -> tuple[str, ...]:
    """What about an endpoint made a peer of the deciding rule match: labels, a list, or any."""
    found: list[str] = []
    for peer in peers:
        if peer.set_name is None:
            found.append("any")
        elif peer.selector is not None:
            if own is not None and peer.selector.matches(own):
                found.extend(peer.selector.matched_by(own) or ("<all workloads>",))
        elif peer in address_peers:
            found.append(peer.text)
    return tuple(dict.fromkeys(found))


def _side(peers: tuple[rulebook.PeerRef, ...]) -> str:
    return " | ".join(p.text for p in peers)


def _outcome(decision: verdicts.Decision, src: Mode | None, dst: Mode | None) -> verdicts.Outcome:
    """Deny blocks when either end enforces, is logged when either end alerts, else passes."""
    if decision is verdicts.Decision.ALLOW:
        return verdicts.Outcome.ALLOWED
    if Mode.ENFORCE in (src, dst):
        return verdicts.Outcome.BLOCKED
    if Mode.ALERT in (src, dst):
        return verdicts.Outcome.WOULD_BLOCK
    return verdicts.Outcome.ALLOWED


def _matching_service(
    rule: rules.Rule,
    protocol: services.Protocol,
    port: int | None,
    process: str | None,
    client_process: str | None,
) -> services.Service | None:
    for svc in rule.services:
        if not svc.matches(protocol, port):
            continue
        if process is not None and svc.process and not process_matches(process, svc.process):
            continue
        client = svc.client_process
        if client_process is not None and client and not process_matches(client_process, client):
            continue
        return svc
    return None


def process_matches(process: str, pattern: str) -> bool:
    """A process (name or path) matches a name or path glob; a bare name also matches a path's base."""
    return fnmatch.fnmatchcase(process, pattern) or fnmatch.fnmatchcase(os.path.basename(process), pattern)


def _pass_notes(passed: Sequence[str]) -> tuple[str, ...]:
    return tuple(f"passed to the next tier by {ref}" for ref in passed)


def _process_notes(svc: services.Service, process: str | None, client_process: str | None) -> tuple[str, ...]:
    notes = []
    if svc.process and process is None:
        notes.append(f"process constraint {svc.process!r} not checked: the serving process is unknown")
    if svc.client_process and client_process is None:
        notes.append(f"process constraint {svc.client_process!r} not checked: the client process is unknown")
    return tuple(notes)

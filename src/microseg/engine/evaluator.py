"""The one evaluator: (source, destination, port, protocol[, process]) -> Verdict.

Fed by the rule book (ordered rules as bits) and the inventory (who owns an address, its labels,
the selectors its identity matches, its mode). Everything that decides "allowed or not" -- the
compiled rulesets, the simulator, the map, `explain` -- must agree with this function; the tests
check the renderers against it.

How it works: the rules whose `from` side can be the source form one bit mask (selectors the
source's identity matches, IP lists / CIDRs holding its address, `any`); likewise for the
destination. Their AND is the candidate list, already in evaluation order. The lowest candidate
that is active now and whose service matches decides; `pass` drops the rest of its tier.
Loopback and the control-plane channel are always allowed (the data plane never blocks them).
"""

from __future__ import annotations

import fnmatch
import os
from datetime import UTC, datetime
from typing import Protocol as TypingProtocol

from microseg.engine import rulebook
from microseg.model import addresses, labels, rules, services, verdicts
from microseg.model.estate import Endpoint as ControlEndpoint
from microseg.model.workloads import Mode, Workload


class Inventory(TypingProtocol):
    """What the evaluator needs to know about workloads (the engine provides it)."""

    def workload_at(self, address: addresses.Address) -> str | None:
        """Name of the workload holding `address`, if any."""

    def workload(self, name: str) -> Workload:
        """The workload called `name`."""

    def effective_labels(self, name: str) -> labels.Labels:
        """Its labels after label rules."""

    def matched_selectors(self, name: str) -> frozenset[str]:
        """Selector keys its identity matches."""


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
        self._control_plane = control_plane
        self._selector_masks: dict[tuple[frozenset[str], bool], int] = {}
        self._address_masks: dict[tuple[addresses.Address, bool], int] = {}

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
        """The verdict for a new connection from `source` to `destination`."""
        src, dst = self._resolve(source), self._resolve(destination)
        system = self._system_verdict(src, dst, port, protocol)
        if system is not None:
            return system
        moment = at or datetime.now(UTC)
        candidates = self._mask(src, sources=True) & self._mask(dst, sources=False)
        passed: list[str] = []
        while candidates:
            low = candidates & -candidates
            br = self._book.rules[low.bit_length() - 1]
            rule = br.rule
            svc = _matching_service(rule, protocol, port, process, client_process)
            if svc is None or not rule.active_at(moment):
                candidates ^= low
            elif rule.action is rules.Action.PASS:
                passed.append(rule.ref)
                candidates &= ~self._book.tier_masks[rule.tier]
            else:
                notes = (*_pass_notes(passed), *_process_notes(svc, process, client_process))
                return self._rule_verdict(br, svc, (src, dst), notes)
        return self._default_verdict(src, dst, passed)

    def equivalence_key(self, endpoint: verdicts.Endpoint) -> tuple[object, ...]:
        """Endpoints with equal keys get equal verdicts against any third endpoint.

        The key holds everything `evaluate` reads about an endpoint: its rule masks on both sides,
        its effective mode, and whether it is a control-plane address. The matrix and the semantic
        diff evaluate one representative per key instead of every workload.
        """
        ep = self._resolve(endpoint)
        on_control_plane = any(ep.address in cp.network for cp in self._control_plane)
        return (self._mask(ep, sources=True), self._mask(ep, sources=False), self._mode(ep), on_control_plane)

    # -- endpoints ---------------------------------------------------------------------------

    def _resolve(self, endpoint: verdicts.Endpoint) -> verdicts.Endpoint:
        if endpoint.workload is not None:
            return endpoint
        return verdicts.Endpoint(endpoint.address, self._inventory.workload_at(endpoint.address))

    def _mask(self, endpoint: verdicts.Endpoint, *, sources: bool) -> int:
        book = self._book
        mask = book.src_any if sources else book.dst_any
        if endpoint.workload is not None:
            matched = self._inventory.matched_selectors(endpoint.workload)
            key = (matched, sources)
            sel = self._selector_masks.get(key)
            if sel is None:
                table = book.src_by_selector if sources else book.dst_by_selector
                sel = 0
                for k in matched:
                    sel |= table.get(k, 0)
                self._selector_masks[key] = sel
            mask |= sel
        akey = (endpoint.address, sources)
        amask = self._address_masks.get(akey)
        if amask is None:
            amask = book.address_mask(endpoint.address, sources=sources)
            self._address_masks[akey] = amask
        return mask | amask

    def _mode(self, endpoint: verdicts.Endpoint) -> Mode | None:
        if endpoint.workload is None:
            return None
        wl = self._inventory.workload(endpoint.workload)
        if not wl.managed:
            return None
        return Mode.ENFORCE if wl.quarantined else wl.mode

    # -- verdicts ----------------------------------------------------------------------------

    def _system_verdict(
        self,
        src: verdicts.Endpoint,
        dst: verdicts.Endpoint,
        port: int | None,
        protocol: services.Protocol,
    ) -> verdicts.Verdict | None:
        if (src.workload is not None and src.workload == dst.workload) or dst.address.is_loopback:
            reason = "loopback: traffic within one host is always allowed"
            return self._system(src, dst, "loopback", reason)
        for cp in self._control_plane:
            if (
                dst.address in cp.network
                and (cp.protocol is services.Protocol.ANY or cp.protocol is protocol)
                and (port is None or port in cp.port)
            ):
                reason = f"control-plane channel {cp} is never blocked"
                return self._system(src, dst, "control-plane", reason)
        return None

    def _system(
        self, src: verdicts.Endpoint, dst: verdicts.Endpoint, name: str, reason: str
    ) -> verdicts.Verdict:
        return verdicts.Verdict(
            decision=verdicts.Decision.ALLOW,
            outcome=verdicts.Outcome.ALLOWED,
            tier=verdicts.SYSTEM_TIER,
            rule=f"{verdicts.SYSTEM_TIER}/{name}",
            reason=reason,
            source_mode=self._mode(src),
            destination_mode=self._mode(dst),
        )

    def _rule_verdict(
        self,
        br: rulebook.BookRule,
        svc: services.Service,
        ends: tuple[verdicts.Endpoint, verdicts.Endpoint],
        notes: tuple[str, ...],
    ) -> verdicts.Verdict:
        src, dst = ends
        rule = br.rule
        decision = verdicts.Decision.ALLOW if rule.action is rules.Action.ALLOW else verdicts.Decision.DENY
        src_mode, dst_mode = self._mode(src), self._mode(dst)
        verb = "allows" if decision is verdicts.Decision.ALLOW else "denies"
        reason = f"rule {rule.ref} {verb} {_side(br.sources)} -> {_side(br.destinations)} on {svc}"
        if rule.reason:
            reason += f" ({rule.reason})"
        return verdicts.Verdict(
            decision=decision,
            outcome=_outcome(decision, src_mode, dst_mode),
            tier=rule.tier,
            rule=rule.ref,
            reason=reason,
            source_labels_matched=self._matched(br.sources, src),
            destination_labels_matched=self._matched(br.destinations, dst),
            source_mode=src_mode,
            destination_mode=dst_mode,
            notes=notes,
        )

    def _default_verdict(
        self, src: verdicts.Endpoint, dst: verdicts.Endpoint, passed: list[str]
    ) -> verdicts.Verdict:
        src_mode, dst_mode = self._mode(src), self._mode(dst)
        tiers_walked = ", ".join(self._book.tiers)
        return verdicts.Verdict(
            decision=verdicts.Decision.DENY,
            outcome=_outcome(verdicts.Decision.DENY, src_mode, dst_mode),
            tier=None,
            rule=None,
            reason=f"no rule in tiers {tiers_walked} matched; default deny",
            source_mode=src_mode,
            destination_mode=dst_mode,
            notes=_pass_notes(passed),
        )

    def _matched(self, peers: tuple[rulebook.PeerRef, ...], endpoint: verdicts.Endpoint) -> tuple[str, ...]:
        """What about `endpoint` made a peer of the deciding rule match: labels, a list, or any."""
        found: list[str] = []
        own = self._inventory.effective_labels(endpoint.workload) if endpoint.workload else None
        for peer in peers:
            if peer.set_name is None:
                found.append("any")
            elif peer.selector is not None:
                if own is not None and peer.selector.matches(own):
                    found.extend(peer.selector.matched_by(own) or ("<all workloads>",))
            elif addresses.contains(peer.networks, endpoint.address):
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


def _pass_notes(passed: list[str]) -> tuple[str, ...]:
    return tuple(f"passed to the next tier by {ref}" for ref in passed)


def _process_notes(svc: services.Service, process: str | None, client_process: str | None) -> tuple[str, ...]:
    notes = []
    if svc.process and process is None:
        notes.append(f"process constraint {svc.process!r} not checked: the serving process is unknown")
    if svc.client_process and client_process is None:
        notes.append(f"process constraint {svc.client_process!r} not checked: the client process is unknown")
    return tuple(notes)

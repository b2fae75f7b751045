"""Invariants against a policy (before it is provisioned) and against single flows (as they arrive).

Fed by a PolicyEngine whose estate declares invariants; feeds provisioning (refuse, or allow with
`force` and an audit record) and flow ingestion (an event per violation).

A policy breaks an invariant when the one evaluator allows some connection the invariant rules
out. Rather than trying every address and port, the check tries one representative per class of
endpoints the policy cannot tell apart (`Evaluator.equivalence_key`, as `reachability` does), one
port per stretch of ports on which no rule's decision changes (rule port-range boundaries), and
every moment at which a timed rule starts or ends, so a rule that becomes active next week is
caught today. Endpoints are the workloads plus one address per IP-list or CIDR network that no
workload holds, and one address outside everything (the internet).

A violation allowed by a built-in quarantine rule (the forensics list and a quarantined workload)
is marked `quarantine`: it exists only while an incident is handled, and callers report it without
refusing the policy for it.

What it deliberately does not do: treat the control-plane and loopback channels as violations
(they are never blocked, by design), or look at processes (an invariant is about reachability;
a process-bound allow still lets the connection through).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from microseg.engine import engine, reachability
from microseg.model import addresses, invariants, selectors, services, tiers, verdicts

INTERNET = (ipaddress.ip_address("203.0.113.77"), ipaddress.ip_address("2001:db8::77"))
"""Addresses standing for "anywhere else" (documentation ranges, never a real peer)."""
ALL = (services.Protocol.TCP, services.Protocol.UDP, services.Protocol.SCTP, services.Protocol.ICMP)
"""What `services: any` stands for in an invariant."""


@dataclass(frozen=True)
class Violation:
    """Connections a policy allows that an invariant rules out: one class pair, one port."""

    invariant: str
    statement: str
    sources: tuple[str, ...]
    destinations: tuple[str, ...]
    port: str
    verdict: verdicts.Verdict
    at: datetime | None = None
    """When the violation starts, for a timed rule that is not active yet (None: now)."""
    quarantine: bool = False
    """Allowed by a built-in quarantine rule (a quarantined workload and the forensics list): an
    incident in progress, reported but no reason to refuse a policy."""

    def to_dict(self) -> dict[str, object]:
        """The API form."""
        return {
            "invariant": self.invariant,
            "statement": self.statement,
            "sources": list(self.sources),
            "destinations": list(self.destinations),
            "port": self.port,
            "rule": self.verdict.rule,
            "tier": self.verdict.tier,
            "reason": self.verdict.reason,
            "from": self.at.isoformat() if self.at else None,
            "quarantine": self.quarantine,
        }

    def __str__(self) -> str:
        ends = f"{_few(self.sources)} -> {_few(self.destinations)} on {self.port}"
        when = f" from {self.at.isoformat()}" if self.at else ""
        when += " (quarantine in progress)" if self.quarantine else ""
        return f"invariant {self.invariant} ({self.statement}): {ends} allowed by {self.verdict.rule}{when}"


def _few(names: tuple[str, ...]) -> str:
    return ", ".join(names) if len(names) <= 3 else f"{', '.join(names[:3])} and {len(names) - 3} more"


class Guard:
    """The invariants of one engine's estate, with what matching them needs looked up once."""

    def __init__(self, eng: engine.PolicyEngine) -> None:
        self.eng = eng
        self.declared = eng.estate.invariants
        self._lists = {i.name: i.networks for i in eng.estate.ip_lists}
        declared = {r.ref for r in eng.estate.rules}  # a user's rule never passes for a built-in one
        self._quarantine = {
            br.rule.ref for br in eng.book.rules if br.rule.tier == tiers.QUARANTINE
        } - declared

    def peer_matches(self, peer: selectors.Peer, endpoint: verdicts.Endpoint) -> bool:
        """Whether `endpoint` is one of `peer`'s: selectors by effective labels, lists by address."""
        if isinstance(peer, selectors.AnyPeer):
            return True
        if isinstance(peer, selectors.SelectorPeer):
            wl = endpoint.workload
            return wl is not None and peer.selector.matches(self.eng.effective_labels(wl))
        nets = self._lists.get(peer.name, []) if isinstance(peer, selectors.IpListPeer) else peer.networks
        return any(endpoint.address in net for net in nets)

    def side(self, peers: tuple[selectors.Peer, ...], endpoint: verdicts.Endpoint) -> bool:
        """Whether any of `peers` matches."""
        return any(self.peer_matches(p, endpoint) for p in peers)

    def serves(self, inv: invariants.Invariant, port: int | None, proto: services.Protocol) -> bool:
        """Whether `inv` speaks about connections on `port`/`proto` at all."""
        return any(s.matches(proto, port) for s in inv.services)

    def can_break(self, inv: invariants.Invariant, end: verdicts.Endpoint, *, source: bool) -> bool:
        """Whether `end`, as the source (else the destination) of a connection, is on the side of
        `inv` that a connection breaking it needs: when not, no peer on the other side can make
        the connection break `inv`."""
        if not source:
            return self.side(inv.destinations, end)
        inside = self.side(inv.sources, end)
        return inside if inv.shape is invariants.Shape.NEVER else not inside

    def rules_out(
        self,
        inv: invariants.Invariant,
        src: verdicts.Endpoint,
        dst: verdicts.Endpoint,
        port: int | None,
        proto: services.Protocol,
    ) -> bool:
        """Whether `inv` forbids a connection from `src` to `dst` on `port`/`proto`."""
        return (
            self.serves(inv, port, proto)
            and self.can_break(inv, dst, source=False)
            and self.can_break(inv, src, source=True)
        )

    def broken_by_flow(
        self,
        src: verdicts.Endpoint,
        dst: verdicts.Endpoint,
        port: int | None,
        proto: services.Protocol,
        among: Iterable[invariants.Invariant] | None = None,
    ) -> list[invariants.Invariant]:
        """The invariants (of `among`, by default all declared) an observed connection (one that
        got through) breaks."""
        if src.workload is not None and src.workload == dst.workload:
            return []
        return [
            inv
            for inv in (self.declared if among is None else among)
            if self.rules_out(inv, src, dst, port, proto)
        ]

    def check(self, at: datetime | None = None) -> list[Violation]:
        """Every class pair and port on which the policy allows what an invariant rules out."""
        now = at or datetime.now(UTC)
        moments = [now, *self._future_changes(now)]
        candidates = self._candidates()
        found: list[Violation] = []
        for inv in self.declared:
            found.extend(self._check_one(inv, candidates, moments))
        return found

    def _check_one(
        self, inv: invariants.Invariant, candidates: list[verdicts.Endpoint], moments: list[datetime]
    ) -> list[Violation]:
        dsts = [e for e in candidates if self.side(inv.destinations, e)]
        inside = [self.side(inv.sources, e) for e in candidates]
        never = inv.shape is invariants.Shape.NEVER
        srcs = [e for e, hit in zip(candidates, inside, strict=True) if hit == never]
        probes = self._probes(inv.services)
        out: list[Violation] = []
        for src_class in self._classes(srcs):
            for dst_class in self._classes(dsts):
                pair = _representatives(src_class, dst_class)
                if pair is None:
                    continue
                hit = self._first_allow(pair, probes, moments)
                if hit is not None:
                    probe, verdict, moment = hit
                    out.append(
                        Violation(
                            inv.name,
                            str(inv),
                            _names(src_class),
                            _names(dst_class),
                            reachability.probe_text(probe),
                            verdict,
                            None if moment is moments[0] else moment,
                            verdict.rule in self._quarantine,
                        )
                    )
        return out

    def _first_allow(
        self,
        pair: tuple[verdicts.Endpoint, verdicts.Endpoint],
        probes: list[reachability.Probe],
        moments: list[datetime],
    ) -> tuple[reachability.Probe, verdicts.Verdict, datetime] | None:
        for moment in moments:
            for proto, port in probes:
                verdict = self.eng.evaluate(pair[0], pair[1], port, proto, at=moment)
                if verdict.decision is verdicts.Decision.ALLOW and verdict.tier != verdicts.SYSTEM_TIER:
                    return (proto, port), verdict, moment
        return None

    def _classes(self, endpoints: list[verdicts.Endpoint]) -> list[list[verdicts.Endpoint]]:
        classes: dict[object, list[verdicts.Endpoint]] = defaultdict(list)
        for e in endpoints:
            classes[self.eng.evaluator.equivalence_key(e)].append(e)
        return list(classes.values())

    def _candidates(self) -> list[verdicts.Endpoint]:
        found = [self.eng.endpoint(name) for name in self.eng.workload_names()]
        seen = {e.address for e in found}
        for address in [*self._network_representatives(), *INTERNET]:
            if address not in seen and self.eng.workload_at(address) is None:
                seen.add(address)
                found.append(verdicts.Endpoint(address))
        return found

    def _network_representatives(self) -> Iterable[addresses.Address]:
        nets: list[addresses.Network] = [n for found in self._lists.values() for n in found]
        peers = [p for br in self.eng.book.rules for p in (*br.rule.sources, *br.rule.destinations)]
        peers += [p for inv in self.declared for p in (*inv.sources, *inv.destinations)]
        nets += [n for p in peers if isinstance(p, selectors.CidrPeer) for n in p.networks]
        for net in nets:
            yield net.network_address + 1 if net.num_addresses > 2 else net.network_address

    def _probes(self, wanted: tuple[services.Service, ...]) -> list[reachability.Probe]:
        """One port per stretch of `wanted` ports on which no rule's match changes."""
        found: set[reachability.Probe] = set()
        for spec in (s for svc in wanted for s in svc.specs):
            protos = ALL if spec.protocol is services.Protocol.ANY else (spec.protocol,)
            for proto in protos:
                if not proto.has_ports:
                    found.add((proto, None))
                    continue
                ranges = spec.ports or (services.PortRange(1, 65535),)
                cuts = self._boundaries(proto)
                for r in ranges:
                    found.add((proto, r.first))
                    found.update((proto, c) for c in cuts if r.first < c <= r.last)
        return sorted(found, key=lambda p: (p[0].value, p[1] or 0))

    def _boundaries(self, proto: services.Protocol) -> set[int]:
        cuts: set[int] = set()
        for br in self.eng.book.rules:
            for spec in (s for svc in br.rule.services for s in svc.specs):
                if spec.protocol is proto:
                    cuts.update(edge for r in spec.ports for edge in (r.first, r.last + 1))
        return cuts

    def _future_changes(self, now: datetime) -> list[datetime]:
        edges = {t for br in self.eng.book.rules for t in (br.rule.not_before, br.rule.not_after) if t}
        return sorted(t for t in edges if t > now)


def _representatives(
    src_class: list[verdicts.Endpoint], dst_class: list[verdicts.Endpoint]
) -> tuple[verdicts.Endpoint, verdicts.Endpoint] | None:
    """A source and a destination that are not the same workload (which always reaches itself)."""
    for src in src_class[:2]:
        for dst in dst_class[:2]:
            if src.workload is None or src.workload != dst.workload:
                return src, dst
    return None


def _names(members: list[verdicts.Endpoint]) -> tuple[str, ...]:
    return tuple(sorted(e.workload or str(e.address) for e in members))

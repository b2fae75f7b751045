"""Reachability between label groups, and the semantic diff of two policies.

Fed by a PolicyEngine (or two); feeds the `matrix` and `diff` commands. Both evaluate one
representative per equivalence class of endpoints (`Evaluator.equivalence_key`): workloads that
the policy cannot tell apart share one evaluation, then results are expanded back to workloads.

What it deliberately does not do: invent verdicts. Every cell and every change comes from the one
evaluator, so they explain themselves the same way `explain` does.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from microseg import errors
from microseg.engine import engine
from microseg.model import services, verdicts

Probe = tuple[services.Protocol, int | None]


def probe_text(probe: Probe) -> str:
    """`443/tcp`, or `icmp` for port-less protocols."""
    proto, port = probe
    return proto.value if port is None else f"{port}/{proto.value}"


def parse_probe(text: str) -> Probe:
    """One port as `services.parse_port` reads it (`443/tcp`, `tcp/443`, `443`, `icmp`); a range
    or a whole protocol with ports is not one probe (ValidationError)."""
    probes = probes_in(services.parse_port(text))
    if len(probes) != 1:
        raise errors.ValidationError(f"port {text!r}: name one port, e.g. 443/tcp", "port")
    return probes[0]


def probes_in(spec: services.PortSpec) -> list[Probe]:
    """Every probe a port spec covers: each port of its ranges (all 65535 when it names none), or
    the port-less protocol alone."""
    if not spec.protocol.has_ports:
        return [(spec.protocol, None)]
    ranges = spec.ports or (services.PortRange(1, 65535),)
    return [(spec.protocol, port) for r in ranges for port in range(r.first, r.last + 1)]


def probes_of(eng: engine.PolicyEngine) -> list[Probe]:
    """One probe per distinct port range start (and port-less protocol) the rules name."""
    found: set[Probe] = set()
    for br in eng.book.rules:
        for svc in br.rule.services:
            for spec in svc.specs:
                if spec.protocol is services.Protocol.ANY:
                    continue
                if not spec.ports:
                    found.add((spec.protocol, None if not spec.protocol.has_ports else 1))
                found.update((spec.protocol, r.first) for r in spec.ports)
    return sorted(found, key=lambda p: (p[0].value, p[1] or 0))


def group_of(eng: engine.PolicyEngine, name: str, keys: tuple[str, ...]) -> str:
    """`env=prod,app=crm,role=web` for the chosen keys (missing keys print as `-`)."""
    own = eng.effective_labels(name)
    return ",".join(f"{k}={own.get(k, '-')}" for k in keys)


def _classes(eng: engine.PolicyEngine) -> dict[object, list[str]]:
    classes: dict[object, list[str]] = defaultdict(list)
    for name in eng.workload_names():
        classes[eng.evaluator.equivalence_key(eng.endpoint(name))].append(name)
    return classes


@dataclass
class Cell:
    """Reachability from one group to another, per probe: every pair, some pairs, or none."""

    pairs: int = 0
    allowed: dict[str, int] = field(default_factory=dict)

    def state(self, probe: str) -> str:
        """`all`, `some` or `none`."""
        n = self.allowed.get(probe, 0)
        return "all" if n == self.pairs else "some" if n else "none"


def matrix(
    eng: engine.PolicyEngine, keys: tuple[str, ...], probes: list[Probe], at: datetime | None = None
) -> dict[tuple[str, str], Cell]:
    """For every (source group, destination group): how many workload pairs each probe reaches.

    "Reaches" means policy allows it; a flow that only passes because an end is in alert or
    visibility mode does not count (that is what `explain` and the diff's outcomes show)."""
    classes = _classes(eng)
    cells: dict[tuple[str, str], Cell] = defaultdict(Cell)
    for src_members in classes.values():
        for dst_members in classes.values():
            reached = _reached(eng, src_members[0], dst_members, probes, at)
            for a in src_members:
                for b in dst_members:
                    if a == b:
                        continue
                    cell = cells[(group_of(eng, a, keys), group_of(eng, b, keys))]
                    cell.pairs += 1
                    for probe in reached.get(b, ()):
                        cell.allowed[probe] = cell.allowed.get(probe, 0) + 1
    return dict(sorted(cells.items()))


def _reached(
    eng: engine.PolicyEngine, src: str, dst_members: list[str], probes: list[Probe], at: datetime | None
) -> dict[str, list[str]]:
    """Probes reaching each destination member from `src`; the representative is never `src`
    itself, because a workload always reaches itself."""
    rep = next((d for d in dst_members if d != src), None)
    if rep is None:
        return {}
    reached = [
        probe_text(p)
        for p in probes
        if eng.evaluate(eng.endpoint(src), eng.endpoint(rep), p[1], p[0], at=at).decision
        is verdicts.Decision.ALLOW
    ]
    return {d: reached for d in dst_members}


@dataclass(frozen=True)
class Change:
    """One workload pair and probe whose outcome differs between two policies."""

    source: str
    destination: str
    probe: str
    before: verdicts.Verdict
    after: verdicts.Verdict

    @property
    def gained(self) -> bool:
        """Whether policy allows the flow after the change and did not before (or, with the same
        decision, whether it now gets through on the wire)."""
        if self.before.decision is not self.after.decision:
            return self.after.decision is verdicts.Decision.ALLOW
        return self.after.allowed and not self.before.allowed


def semantic_diff(
    old: engine.PolicyEngine, new: engine.PolicyEngine, probes: list[Probe], at: datetime | None = None
) -> list[Change]:
    """Pairs of workloads present in both estates whose decision or outcome changes for some probe."""
    common = sorted(set(old.workload_names()) & set(new.workload_names()))
    signature: dict[tuple[object, object], list[str]] = defaultdict(list)
    for name in common:
        key = (
            old.evaluator.equivalence_key(old.endpoint(name)),
            new.evaluator.equivalence_key(new.endpoint(name)),
        )
        signature[key].append(name)
    changes: list[Change] = []
    for src_members in signature.values():
        for dst_members in signature.values():
            changes.extend(_class_changes((old, new), src_members, dst_members, probes, at))
    return sorted(changes, key=lambda c: (c.source, c.destination, c.probe))


def _class_changes(
    engines: tuple[engine.PolicyEngine, engine.PolicyEngine],
    src_members: list[str],
    dst_members: list[str],
    probes: list[Probe],
    at: datetime | None,
) -> list[Change]:
    """Changes between two classes; the pair of representatives must be distinct workloads (a
    workload always reaches itself), and only a class of one has no such pair with itself."""
    old, new = engines
    src = src_members[0]
    rep = next((d for d in dst_members if d != src), None)
    if rep is None:
        return []
    out: list[Change] = []
    for proto, port in probes:
        before = old.evaluate(old.endpoint(src), old.endpoint(rep), port, proto, at=at)
        after = new.evaluate(new.endpoint(src), new.endpoint(rep), port, proto, at=at)
        if before.outcome is after.outcome and before.decision is after.decision:
            continue
        out.extend(
            Change(a, b, probe_text((proto, port)), before, after)
            for a in src_members
            for b in dst_members
            if a != b
        )
    return out

"""Recommendations: least-privilege allow rules proposed from the flows of a time window.

Fed by summary rows (through `flowset.flow_set`: each distinct flow is judged once), the engine of
the current draft, and the label keys the user chose as granularity (`app,role`). Feeds the API /
CLI, which show the proposal and, when accepted, write its documents into the draft.

Only flows the current policy denies by default get a rule (a flow an explicit deny rule stops
is left out: an appended allow cannot change it). Each rule joins one source group and one
destination group: workloads (managed or not) by a selector of the group-by labels, addresses in
an IP list by that list, other addresses by their exact /32 (or /128), never `any`. Its services
are the ports seen, each pinned to the serving process when exactly one process served it.
Coverage is measured, not assumed: every observed flow is evaluated again by an engine built with
the proposed rules added (the one verdict function), and the flows still denied are listed with
the reason. This module does not write the draft and does not widen ports into ranges.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from microseg.analytics import collecting, flowset
from microseg.engine import engine as engine_mod
from microseg.errors import ValidationError
from microseg.model import addresses, rules, selectors, services, verdicts
from microseg.model import estate as estate_mod
from microseg.policyfile import canonical, dumper

TIER = "application"
POLICY = "recommended"
"""Policy name the proposed rules are grouped under."""
PRIORITY_STEP = 10
"""Gap between proposed rules' priorities, room to insert by hand."""
MAX_NAME = 64


@dataclass(frozen=True)
class LeftOut:
    """A flow the proposal does not allow, and why."""

    flow: str
    connections: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"flow": self.flow, "connections": self.connections, "reason": self.reason}


@dataclass(frozen=True)
class Recommendation:
    """Proposed rules (model and policy-file documents), their measured coverage, what is left out."""

    rules: tuple[rules.Rule, ...]
    services: tuple[services.Service, ...]
    """Named services the rules need (those pinned to a process); inline ports need none."""
    documents: tuple[dict[str, Any], ...]
    flows: int
    covered: int
    connections: int
    covered_connections: int
    left_out: tuple[LeftOut, ...]
    skipped_rows: int = 0
    """Summary rows left out because they do not check out (`flowset`)."""

    @property
    def coverage(self) -> float:
        """Percent of observed flows that the policy with the proposal added allows (100 with none)."""
        return 100.0 if not self.flows else 100.0 * self.covered / self.flows

    @property
    def connection_coverage(self) -> float:
        """The same, weighted by connections."""
        return 100.0 if not self.connections else 100.0 * self.covered_connections / self.connections

    def to_json(self) -> dict[str, Any]:
        """JSON form: documents ready for `POST /apply`, coverage, flows left out."""
        return {
            "documents": list(self.documents),
            "coverage": round(self.coverage, 2),
            "connectionCoverage": round(self.connection_coverage, 2),
            "flows": self.flows,
            "coveredFlows": self.covered,
            "leftOut": [lo.to_json() for lo in self.left_out],
            "skippedRows": self.skipped_rows,
        }


# -- grouping flows into proposed rules --------------------------------------------------------

_Side = tuple[str, str]
"""("selector", text) | ("ipList", name) | ("cidr", "") -- cidr addresses collect per rule."""
_PortKey = tuple[str, int | None]


@dataclass
class _Draft:
    """One proposed rule while flows stream in."""

    cidr_sources: set[addresses.Address] = field(default_factory=set)
    cidr_destinations: set[addresses.Address] = field(default_factory=set)
    processes: dict[_PortKey, set[str]] = field(default_factory=dict)
    connections: int = 0


@collecting.while_paused
def recommend(
    rows: Iterable[flowset.Row], engine: engine_mod.PolicyEngine, group_by: tuple[str, ...]
) -> Recommendation:
    """Propose allow rules for the denied flows of `rows` at `group_by` granularity, with coverage."""
    if not group_by:
        raise ValidationError("recommendations need at least one group-by label key", "groupBy")
    window = flowset.flow_set(rows, engine)
    judge = flowset.Judge(engine)
    fates = [_fate(flow, judge(flow), group_by) for flow in window.distinct]
    drafts: dict[tuple[_Side, _Side], _Draft] = {}
    for flow, fate in zip(window.distinct, fates, strict=True):
        if isinstance(fate, tuple):
            _add(drafts, flow, fate)
    proposed = _rules(drafts, engine.estate)
    named = _named_services(proposed)
    after = engine_mod.PolicyEngine(_with(engine.estate, proposed, named))
    return _measure(window, after, fates, proposed, named)


_Fate = tuple[_Side, _Side] | str | None
"""The rule sides a flow adds to, why it is left out, or None (the policy allows it already)."""


def _fate(flow: flowset.Flow, current: verdicts.Verdict, group_by: tuple[str, ...]) -> _Fate:
    """What becomes of a (distinct) flow that the policy judges `current`."""
    if current.decision is verdicts.Decision.ALLOW:
        return None
    why = _denied_by_rule(current) or _blocked(flow) or _unwritable(flow, group_by)
    if why is not None:
        return why
    return _side(flow.source, group_by), _side(flow.destination, group_by)


def _blocked(flow: flowset.Flow) -> str | None:
    """A flow the data plane dropped is no evidence that it is needed (it is what an intruder's
    attempts look like under enforcement): only flows that went through are learnt from."""
    if flow.verdict is verdicts.Outcome.BLOCKED:
        return "it was blocked when seen (enforce mode): not learnt from; allow it by hand if it is wanted"
    return None


def _denied_by_rule(verdict: verdicts.Verdict) -> str | None:
    """A rule that denies comes before any appended allow (a higher tier or an earlier priority):
    proposing one would be noise that cannot change the verdict."""
    if verdict.rule is None:
        return None
    return f"denied by {verdict.rule}, which comes before any proposed rule ({verdict.reason})"


def _unwritable(flow: flowset.Flow, group_by: tuple[str, ...]) -> str | None:
    """Why no least-privilege rule can be written for a flow, or None."""
    if flow.proto == "other":
        return "protocol 'other' cannot be written as a service"
    if flow.dport is None and flow.protocol.has_ports:
        return f"no destination port was seen for this {flow.proto} flow"
    if not (flow.source.is_workload or flow.destination.is_workload):
        return "neither end is a workload: no rule would be enforced anywhere"
    for peer in (flow.source, flow.destination):
        if peer.is_workload and not any(k in peer.labels for k in group_by):
            return f"workload {peer.name} has none of the labels {', '.join(group_by)}; label it first"
    return None


def _side(peer: flowset.Peer, group_by: tuple[str, ...]) -> _Side:
    if peer.is_workload:
        # a missing key becomes !key: the selector stays as narrow as the group it names
        parts = [f"{k}={peer.labels[k]}" if k in peer.labels else f"!{k}" for k in group_by]
        return ("selector", ",".join(parts))
    if peer.kind is flowset.PeerKind.IP_LIST:
        return ("ipList", peer.name)
    return ("cidr", "")


def _add(drafts: dict[tuple[_Side, _Side], _Draft], flow: flowset.Flow, sides: tuple[_Side, _Side]) -> None:
    src, dst = sides
    draft = drafts.get(sides)
    if draft is None:
        draft = drafts[sides] = _Draft()
    if src[0] == "cidr":
        draft.cidr_sources.add(flow.src)
    if dst[0] == "cidr":
        draft.cidr_destinations.add(flow.dst)
    seen = draft.processes.setdefault((flow.proto, flow.dport), set())
    if flow.process is not None:
        seen.add(flow.process)
    draft.connections += flow.connections


# -- building rules ----------------------------------------------------------------------------


def _rules(drafts: dict[tuple[_Side, _Side], _Draft], est: estate_mod.Estate) -> tuple[rules.Rule, ...]:
    in_tier = [r for r in est.rules if r.tier == TIER]
    # after every existing application rule: a deliberate deny there keeps its effect
    priority = max((r.priority for r in in_tier), default=0) + PRIORITY_STEP
    taken = {r.name for r in in_tier}
    services_by_name = {s.name: s for s in est.services}
    out = []
    for (src, dst), draft in sorted(drafts.items()):
        name = _unique(f"rec-{_slug(src)}-to-{_slug(dst)}", taken)
        rule_services = tuple(
            _service(key, procs, services_by_name)
            for key, procs in sorted(draft.processes.items(), key=_port_key)
        )
        out.append(
            rules.Rule(
                name=name,
                tier=TIER,
                priority=priority,
                action=rules.Action.ALLOW,
                sources=(_peer(src, draft.cidr_sources),),
                destinations=(_peer(dst, draft.cidr_destinations),),
                services=rule_services,
                reason=f"recommended from {draft.connections} observed connections",
                policy=POLICY,
            )
        )
        priority += PRIORITY_STEP
    return tuple(out)


def _port_key(item: tuple[_PortKey, set[str]]) -> tuple[str, int]:
    (proto, dport), _ = item
    return (proto, -1 if dport is None else dport)


def _peer(side: _Side, cidrs: set[addresses.Address]) -> selectors.Peer:
    kind, value = side
    if kind == "selector":
        return selectors.SelectorPeer(selectors.LabelSelector.parse(value))
    if kind == "ipList":
        return selectors.IpListPeer(value)
    hosts = sorted(cidrs, key=lambda a: (a.version, int(a)))
    return selectors.CidrPeer(tuple(addresses.network(f"{a}/{a.max_prefixlen}") for a in hosts))


def _service(key: _PortKey, processes: set[str], existing: dict[str, services.Service]) -> services.Service:
    proto, dport = key
    ports = (services.PortRange(dport, dport),) if dport is not None else ()
    spec = services.PortSpec(services.Protocol(proto), ports)
    if len(processes) != 1:
        return canonical.inline_service(spec)
    (process,) = processes
    base = f"rec-{_slug_text(str(spec))}-{_slug_text(process)}"
    svc, suffix = services.Service(base, (spec,), process=process), 2
    # a same-named service (of the estate, or minted earlier: `Java` and `java` share a slug) that
    # means something else must not be shadowed; `existing` learns every name minted here
    while svc.name in existing and existing[svc.name] != svc:
        svc, suffix = replace(svc, name=f"{base}-{suffix}"), suffix + 1
    existing.setdefault(svc.name, svc)
    return svc


def _named_services(proposed: tuple[rules.Rule, ...]) -> tuple[services.Service, ...]:
    found = {s.name: s for r in proposed for s in r.services if not canonical.is_inline(s)}
    return tuple(found[n] for n in sorted(found))


def _with(
    est: estate_mod.Estate, proposed: tuple[rules.Rule, ...], named: tuple[services.Service, ...]
) -> estate_mod.Estate:
    declared = {s.name for s in est.services}
    extra = tuple(s for s in named if s.name not in declared)
    return replace(est, rules=(*est.rules, *proposed), services=(*est.services, *extra))


def _slug(side: _Side) -> str:
    kind, value = side
    if kind == "selector":
        return _slug_text("-".join(p.split("=", 1)[-1] for p in value.split(",") if not p.startswith("!")))
    return _slug_text(value) if kind == "ipList" else "addresses"


def _slug_text(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _unique(base: str, taken: set[str]) -> str:
    stem = base[: MAX_NAME - 4].strip("-")
    name, n = stem, 2
    while name in taken:
        name, n = f"{stem}-{n}", n + 1
    taken.add(name)
    return name


# -- measuring ---------------------------------------------------------------------------------


def _measure(
    window: flowset.FlowSet,
    after: engine_mod.PolicyEngine,
    fates: list[_Fate],
    proposed: tuple[rules.Rule, ...],
    named: tuple[services.Service, ...],
) -> Recommendation:
    covered = covered_connections = 0
    left_out = []
    judge = flowset.Judge(after)
    outcomes = [judge(flow) for flow in window.distinct]
    described: dict[int, str] = {}
    for index, connections in window.occurrences:
        verdict = outcomes[index]
        if verdict.decision is verdicts.Decision.ALLOW:
            covered += 1
            covered_connections += connections
            continue
        if index not in described:
            described[index] = window.distinct[index].describe()
        fate = fates[index]
        reason = fate if isinstance(fate, str) else verdict.reason
        left_out.append(LeftOut(described[index], connections, reason))
    return Recommendation(
        rules=proposed,
        services=named,
        documents=tuple(_documents(proposed, named)),
        flows=len(window.occurrences),
        covered=covered,
        connections=window.connections,
        covered_connections=covered_connections,
        left_out=tuple(left_out),
        skipped_rows=window.skipped,
    )


def _documents(proposed: tuple[rules.Rule, ...], named: tuple[services.Service, ...]) -> list[dict[str, Any]]:
    """Policy-file documents (Service, Policy) through the stable dumper, as a draft would hold them."""
    if not proposed:
        return []
    docs = dumper.documents(estate_mod.Estate(services=named, rules=proposed))
    return [d for d in docs if d["kind"] in ("Service", "Policy")]

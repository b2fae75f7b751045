"""A naive reference evaluator, written from the documentation alone (not from `microseg.engine`).

It reads the same inputs as the engine (a `model.estate.Estate` and one flow) and answers the same
question: allowed or not, and which tier and rule decided. It is slow on purpose: plain loops over
the estate's lists, rules tried one by one in order, nothing cached or indexed. Each step quotes the
sentence of `docs/concepts.md`, `docs/policy-file.md` or `docs/ruleset.md` it implements, so a
disagreement with the engine points at a sentence that one of the two reads differently. Where the
documents were silent (loopback, process globs, the built-in quarantine rules, unmanaged modes),
the engine's behaviour was asked through its public API and written into `docs/concepts.md`
first; the engine's code was not read. Where engine and documents disagree,
`test_findings.py` holds a minimal example.

Used only by `tests/reference/test_engine_agrees.py`; it is not product code. It uses the model's
data types and `labelrules.effective_labels` (what label rules add is defined by the model, and the
engine's label index consumes the result), nothing else from the package.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from microseg.model import addresses, estate, labelrules, rules, selectors, services, workloads
from microseg.model.verdicts import Decision, Outcome

SYSTEM = "system"
QUARANTINE = "quarantine"


@dataclass(frozen=True)
class Flow:
    """One connection attempt: who to whom, on which protocol and destination port, when, and the
    processes on both sides when the reporting side knows them."""

    source: addresses.Address
    destination: addresses.Address
    port: int | None
    protocol: services.Protocol
    at: datetime
    process: str | None = None
    """The serving process (on the destination)."""
    client_process: str | None = None
    """The connecting process (on the source)."""


@dataclass(frozen=True)
class Answer:
    """What the reference says: the decision, the outcome on the wire, and what decided
    (`tier`/`rule` are None for the default deny)."""

    decision: Decision
    outcome: Outcome
    tier: str | None
    rule: str | None


@dataclass(frozen=True)
class _End:
    """One side of a flow: its address and the workload that holds it, if any."""

    address: addresses.Address
    workload: workloads.Workload | None
    labels: Mapping[str, str]


def evaluate(est: estate.Estate, flow: Flow) -> Answer:
    """The verdict for `flow` under `est`, step by step as the documents describe it."""
    source, destination = _end(est, flow.source), _end(est, flow.destination)
    system = _always_allowed(est, flow, source, destination)
    if system is not None:
        return Answer(Decision.ALLOW, Outcome.ALLOWED, SYSTEM, f"{SYSTEM}/{system}")
    decision, tier, rule = _walk_tiers(est, flow, source, destination)
    return Answer(decision, _outcome(decision, source, destination), tier, rule)


# -- the two ends ------------------------------------------------------------------------------


def _end(est: estate.Estate, address: addresses.Address) -> _End:
    """policy-file.md: "every address belongs to exactly one workload, so every verdict is
    unambiguous" (an unmanaged workload's CIDR holds every address inside it)."""
    for workload in est.workloads:
        for network in workload.addresses:
            if address.version == network.version and address in network:
                # concepts.md: label rules derive labels from attributes; explicit labels win.
                return _End(address, workload, labelrules.effective_labels(workload, est.label_rules))
    return _End(address, None, {})


# -- what no tier decides ----------------------------------------------------------------------


def _always_allowed(est: estate.Estate, flow: Flow, source: _End, destination: _End) -> str | None:
    """concepts.md: "Before any tier, loopback ... and the agent's control-plane channel ... are
    always allowed: verdicts name them `system/loopback` and `system/control-plane`." """
    if _is_loopback(source, destination):
        return "loopback"
    for endpoint in est.control_plane:
        if _reaches_control_plane(endpoint, flow):
            return "control-plane"
    return None


def _is_loopback(source: _End, destination: _End) -> bool:
    """concepts.md: "loopback (a connection to 127.0.0.0/8 or ::1, or between two addresses of one
    workload)"."""
    if destination.address.is_loopback:
        return True
    return source.workload is not None and source.workload is destination.workload


def _reaches_control_plane(endpoint: estate.Endpoint, flow: Flow) -> bool:
    """ruleset.md: `controlPlane` endpoints (`cidr`, `port`, `protocol`) are "the agent's channel to
    the control plane": connections *to* the endpoint's address, port and protocol. Its protocol
    and port read as a service's do ("`icmp` and `any` never have ports, and `any` matches every
    protocol"; the loader refuses a port with either, a hand-built estate may have one)."""
    if flow.destination.version != endpoint.network.version or flow.destination not in endpoint.network:
        return False
    if endpoint.protocol is services.Protocol.ANY:
        return True
    if flow.protocol is not endpoint.protocol:
        return False
    if endpoint.protocol is services.Protocol.ICMP:
        return True
    return flow.port is not None and endpoint.port.first <= flow.port <= endpoint.port.last


# -- the tiers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    """A rule as the tier walk sees it: its reference, action, and whether it matches the flow."""

    ref: str
    action: rules.Action
    matches: bool


def _walk_tiers(
    est: estate.Estate, flow: Flow, source: _End, destination: _End
) -> tuple[Decision, str | None, str | None]:
    """policy-file.md: "Tiers are evaluated in order. Inside a tier, rules are tried by priority; the
    first rule whose `from` matches the source, `to` matches the destination and a service matches
    the port decides. `allow` and `deny` end the evaluation; `pass` skips the rest of its tier and
    continues with the next tier; no match in a tier continues with the next tier. After the last
    tier: default deny, explained as such." """
    for tier in sorted(est.tiers, key=lambda t: t.order):  # "lower first" (policy-file.md, Tier)
        for candidate in _candidates(est, tier.name, flow, source, destination):
            if not candidate.matches:
                continue
            if candidate.action is rules.Action.PASS:
                break
            decision = Decision.ALLOW if candidate.action is rules.Action.ALLOW else Decision.DENY
            return decision, tier.name, candidate.ref
    return Decision.DENY, None, None


def _candidates(
    est: estate.Estate, tier: str, flow: Flow, source: _End, destination: _End
) -> list[_Candidate]:
    """The tier's rules in the order they are tried. concepts.md: "The `quarantine` tier tries four
    built-in rules before any rule written in it"; "Inside a tier the first matching rule by
    priority, then name, decides"."""
    out = _quarantine_rules(est, source, destination) if tier == QUARANTINE else []
    written = [r for r in est.rules if r.tier == tier]
    written.sort(key=lambda r: (r.priority, r.name))
    for rule in written:
        out.append(_Candidate(rule.ref, rule.action, _rule_matches(est, rule, flow, source, destination)))
    return out


def _quarantine_rules(est: estate.Estate, source: _End, destination: _End) -> list[_Candidate]:
    """concepts.md, Quarantine: a quarantined workload keeps "only the control plane (`full`) or also
    a forensics IP list (`forensics`)": label `quarantine=full`, or `quarantine=true` and the
    Settings' `quarantineAllow` list, both ways (policy-file.md: "an IP list quarantined workloads
    may still talk to"). Each quarantined end keeps only what its own level keeps. The built-in
    rules, in this order: `allow-forensics-in`, `allow-forensics-out`, `isolate-in`, `isolate-out`."""
    keeps = {
        id(end): _keeps(est, end, other) for end, other in ((source, destination), (destination, source))
    }
    return [
        _Candidate(
            "quarantine/allow-forensics-in",
            rules.Action.ALLOW,
            _level(destination) == workloads.QUARANTINE_FORENSICS
            and keeps[id(destination)]
            and keeps[id(source)],
        ),
        _Candidate(
            "quarantine/allow-forensics-out",
            rules.Action.ALLOW,
            _level(source) == workloads.QUARANTINE_FORENSICS and keeps[id(source)] and keeps[id(destination)],
        ),
        _Candidate("quarantine/isolate-in", rules.Action.DENY, _level(destination) is not None),
        _Candidate("quarantine/isolate-out", rules.Action.DENY, _level(source) is not None),
    ]


def _keeps(est: estate.Estate, end: _End, other: _End) -> bool:
    """Whether `end`'s own quarantine (if any) lets it talk to `other`: not quarantined, or
    quarantined at the forensics level with `other` in the `quarantineAllow` list."""
    level = _level(end)
    if level is None:
        return True
    forensics = _ip_list(est, est.quarantine_allow) if est.quarantine_allow else None
    return (
        level == workloads.QUARANTINE_FORENSICS
        and forensics is not None
        and in_networks(other.address, *forensics)
    )


def _level(end: _End) -> str | None:
    """The quarantine label's value when it quarantines (`true` or `full`), else None."""
    value = end.labels.get(workloads.QUARANTINE_LABEL) if end.workload is not None else None
    return value if value in (workloads.QUARANTINE_FORENSICS, workloads.QUARANTINE_FULL) else None


def _rule_matches(est: estate.Estate, rule: rules.Rule, flow: Flow, source: _End, destination: _End) -> bool:
    """A rule decides when it is active and its `from`, `to` and one of its services all match."""
    if not _active(rule, flow.at):
        return False
    if not any(_peer_matches(est, peer, source) for peer in rule.sources):
        return False
    if not any(_peer_matches(est, peer, destination) for peer in rule.destinations):
        return False
    return any(_service_matches(service, flow) for service in rule.services)


def _active(rule: rules.Rule, at: datetime) -> bool:
    """policy-file.md: "optional time window [notBefore, notAfter)"; `enabled: true # default true`
    (a disabled rule is not there); ruleset.md: "An inactive entry is treated as absent." Instants
    are compared in UTC, so a time zone never changes the answer."""
    if not rule.enabled:
        return False
    moment = at.astimezone(UTC)
    if rule.not_before is not None and moment < rule.not_before.astimezone(UTC):
        return False
    return rule.not_after is None or moment < rule.not_after.astimezone(UTC)


# -- peers -------------------------------------------------------------------------------------


def _peer_matches(est: estate.Estate, peer: selectors.Peer, end: _End) -> bool:
    """policy-file.md, Peers: a selector matches "workloads whose labels match"; `ipList` "the
    addresses of an IP list"; `cidr` "literal networks" minus `except`; `any` "everything, managed or
    not (an empty selector is *not* any: it is every workload)"."""
    if isinstance(peer, selectors.AnyPeer):
        return True
    if isinstance(peer, selectors.SelectorPeer):
        return end.workload is not None and _selector_matches(peer.selector, end.labels)
    if isinstance(peer, selectors.CidrPeer):
        return in_networks(end.address, peer.cidrs, peer.excepts)
    found = _ip_list(est, peer.name)
    # An IP list nobody defined stands for no address (model/selectors.py: "unknown -> matches
    # nothing"); the loader refuses such an estate, so only hand-built estates have one.
    return found is not None and in_networks(end.address, *found)


def _ip_list(
    est: estate.Estate, name: str
) -> tuple[tuple[addresses.Network, ...], tuple[addresses.Network, ...]] | None:
    for ip_list in est.ip_lists:
        if ip_list.name == name:
            return ip_list.cidrs, ip_list.excepts
    return None


def in_networks(
    address: addresses.Address, cidrs: tuple[addresses.Network, ...], excepts: tuple[addresses.Network, ...]
) -> bool:
    """policy-file.md, IPList: `cidrs`, with `except` "carved out"."""
    inside = any(address.version == n.version and address in n for n in cidrs)
    return inside and not any(address.version == n.version and address in n for n in excepts)


def _selector_matches(selector: selectors.LabelSelector, labels: Mapping[str, str]) -> bool:
    """concepts.md: "label selectors (kubectl syntax)": every requirement holds; Kubernetes' NotIn
    and DoesNotExist hold when the key is absent."""
    for requirement in selector.requirements:
        value = labels.get(requirement.key)
        op = requirement.operator
        if op is selectors.Operator.IN and (value is None or value not in requirement.values):
            return False
        if op is selectors.Operator.NOT_IN and value is not None and value in requirement.values:
            return False
        if op is selectors.Operator.EXISTS and value is None:
            return False
        if op is selectors.Operator.DOES_NOT_EXIST and value is not None:
            return False
    return True


# -- services ----------------------------------------------------------------------------------


def _service_matches(service: services.Service, flow: Flow) -> bool:
    """policy-file.md, Service: ports or ranges (`endPort` inclusive) with a protocol; "`any` matches
    every protocol"; a protocol without ports is every port of it; `process` is the serving side,
    `clientProcess` the connecting side."""
    if not any(_spec_matches(spec, flow) for spec in service.specs):
        return False
    if not _process_matches(service.process, flow.process):
        return False
    return _process_matches(service.client_process, flow.client_process)


def _spec_matches(spec: services.PortSpec, flow: Flow) -> bool:
    if spec.protocol is services.Protocol.ANY:
        return True
    if spec.protocol is not flow.protocol:
        return False
    if not spec.ports:
        return True
    return flow.port is not None and any(r.first <= flow.port <= r.last for r in spec.ports)


def _process_matches(pattern: str | None, process: str | None) -> bool:
    """concepts.md: "A process pattern with a `/` is a glob over the executable's path
    (`/usr/sbin/*`), one without a glob over its name (`mysql*` matches `/usr/sbin/mysqld`). Where a
    flow's process is unknown, the process is not checked: the port decides." """
    if pattern is None or process is None:
        return True
    if "/" in pattern:
        return fnmatch.fnmatchcase(process, pattern)
    return fnmatch.fnmatchcase(process.rsplit("/", 1)[-1], pattern)


# -- modes -------------------------------------------------------------------------------------


def _outcome(decision: Decision, source: _End, destination: _End) -> Outcome:
    """policy-file.md: "A flow is blocked when the decision is deny and either end enforces; logged
    as would-block when either end is in alert mode; otherwise it passes." """
    if decision is Decision.ALLOW:
        return Outcome.ALLOWED
    modes = (_mode(source), _mode(destination))
    if workloads.Mode.ENFORCE in modes:
        return Outcome.BLOCKED
    if workloads.Mode.ALERT in modes:
        return Outcome.WOULD_BLOCK
    return Outcome.ALLOWED


def _mode(end: _End) -> workloads.Mode | None:
    """The mode an end applies. concepts.md: an unmanaged workload is "a device without an agent",
    and an address outside every workload has none either: neither blocks nor logs. policy-file.md:
    "A workload labelled `quarantine=true` is enforced whatever its mode" (api.md: `full` too)."""
    if end.workload is None or end.workload.kind is workloads.WorkloadKind.UNMANAGED:
        return None
    if _level(end) is not None:
        return workloads.Mode.ENFORCE
    return end.workload.mode

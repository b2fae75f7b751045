"""The meaning of a ruleset document, written as directly as possible: the spec the renderers obey.

Sits beside the renderers, not in their path: `nftables` and `iptables` translate a document, and
tests check the translation against `decide` (through `nftverify`, which evaluates the rendered
text). Another check compares `decide` with the engine's evaluator, so this module is the bridge
between "what the engine says" and "what the kernel does".

`decide` covers what a document says about a *new* connection on a non-loopback interface: the
control-plane allowance, then the tiers, then the default deny. It deliberately does not model
what the data plane adds around that (loopback, established/related, invalid packets, IPv6
neighbour discovery), nor process or user constraints: it is the port-level meaning, which is what
a renderer enforces when it cannot see processes (and says so in a warning).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from microseg.model import addresses, estate, rules, ruleset, services, tiers, workloads

Direction = Literal["ingress", "egress"]
Verdict = Literal["accept", "drop"]

CONTROL_PLANE_REF = "system/control-plane"
"""Reference that counters, logs and verdicts carry for the always-allowed control-plane channel."""

CONTROL_PLANE_REPLY_REF = "system/control-plane-reply"
"""Reference of the rule that keeps the agent's own control-plane connections alive when their
conntrack entries are gone (`conntrack -F`, a full table): packets from the control plane's port
with ACK set, which never open a connection."""

DEFAULT_REF = tiers.DEFAULT
"""Reference of the final default deny."""


class Flow(NamedTuple):
    """A new connection as seen from the workload."""

    peer: addresses.Address
    local: addresses.Address
    protocol: services.Protocol
    port: int | None
    at: float


def decide(  # noqa: PLR0917 -- the agreed signature, shared with the engine's cross-check
    doc: ruleset.RulesetDocument,
    direction: Direction,
    peer: addresses.Address,
    local: addresses.Address,
    protocol: services.Protocol,
    port: int | None,
    at: float,
) -> tuple[rules.Action, str]:
    """Allow or deny, and the deciding reference, for a new connection of the workload.

    `peer` is the other end, `local` the workload's own address; `port` is the destination port
    (None for protocols without ports); `protocol` ANY stands for a protocol the model does not name
    (GRE, ...); `at` is epoch seconds. The answer is never `pass`.
    """
    destination = local if direction == "ingress" else peer
    if any(control_plane_matches(ep, destination, protocol, port) for ep in doc.control_plane):
        return rules.Action.ALLOW, CONTROL_PLANE_REF
    flow = Flow(peer, local, protocol, port, at)
    entries = doc.ingress if direction == "ingress" else doc.egress
    for tier in doc.tiers:
        for entry in entries:
            if entry.tier != tier or not entry_matches(doc, entry, flow):
                continue
            if entry.action is rules.Action.PASS:
                break
            return entry.action, entry.ref
    return rules.Action.DENY, DEFAULT_REF


def entry_matches(doc: ruleset.RulesetDocument, entry: ruleset.Entry, flow: Flow) -> bool:
    """Whether one entry covers the connection (sets, ports, time window; never the process)."""
    if entry.peer_sets is not None and not _in_sets(doc, entry.peer_sets, flow.peer):
        return False
    if entry.local_sets is not None and not _in_sets(doc, entry.local_sets, flow.local):
        return False
    if not any(spec.matches(flow.protocol, flow.port) for spec in entry.ports):
        return False
    if entry.not_before is not None and flow.at < entry.not_before:
        return False
    return entry.not_after is None or flow.at < entry.not_after


def control_plane_matches(
    endpoint: estate.Endpoint, destination: addresses.Address, protocol: services.Protocol, port: int | None
) -> bool:
    """The engine's rule: the destination is in the endpoint's network, the protocol is the
    endpoint's (or the endpoint says any), and a port, when the packet has one, is in its range."""
    if destination not in endpoint.network:
        return False
    if endpoint.protocol is not services.Protocol.ANY and endpoint.protocol is not protocol:
        return False
    return port is None or port in endpoint.port


def outcome(mode: workloads.Mode, action: rules.Action) -> tuple[Verdict, bool]:
    """What the wire sees, and whether the flow is logged: deny drops and logs in enforce mode,
    is logged and accepted in alert mode (would-block), and only counted in visibility mode."""
    if action is rules.Action.ALLOW:
        return "accept", False
    if mode is workloads.Mode.ENFORCE:
        return "drop", True
    return "accept", mode is workloads.Mode.ALERT


def _in_sets(doc: ruleset.RulesetDocument, names: tuple[str, ...], address: addresses.Address) -> bool:
    return any(addresses.contains(doc.address_set(name).networks, address) for name in names)

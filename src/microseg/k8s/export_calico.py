"""microseg policy -> Calico `projectcalico.org/v3` Tiers and GlobalNetworkPolicies, rule for rule.

Fed by `export_base.Context`; called by `microseg.k8s.export`. Calico has what microseg has: tiers
in order, policies in order inside a tier, Allow / Deny / Pass, and a per-tier default action. So
nothing is flattened; each microseg rule becomes, per pod selector it names,

    an ingress policy selecting its destination pods (sources and ports in the rule) and
    an egress policy selecting its source pods (destinations and ports in the rule),

in tier `ms-<tier>` (defaultAction Pass: no match goes on to the next tier, as in microseg) at the
rule's position. Both ends evaluate the same ordered list, so both reach the rule microseg's
evaluator reaches. Around them:

    tier ms-modes (first)   Allow everything for pods in alert or visibility mode (never blocked
                            at their own end; quarantine forces enforce)
    tier ms-default (last)  defaultAction Deny, with the control plane kept open: the default deny

Pods are selected by label with `projectcalico.org/orchestrator == 'k8s'`, so no host endpoint is
ever selected, and only in the namespaces in scope (`projectcalico.org/namespace in {...}`), so
kube-system and CoreDNS are never touched; peers through `namespaceSelector`
(`projectcalico.org/name` is the name). Unless --no-dns, the default deny lets pods reach kube-dns
on 53 when no microseg rule decided first.
Other workloads and IP lists are `nets` (Calico matches pod addresses there too, like microseg).

What it deliberately does not do: express time windows or processes (refused by `flatten`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from microseg import errors
from microseg.engine import rulebook
from microseg.k8s import export_base, flatten, importer, regions
from microseg.model import addresses, rules, selectors, services

API_VERSION = "projectcalico.org/v3"
PODS = "projectcalico.org/orchestrator == 'k8s'"
ACTIONS = {rules.Action.ALLOW: "Allow", rules.Action.DENY: "Deny", rules.Action.PASS: "Pass"}
Manifest = export_base.Manifest
Op = selectors.Operator


def write(ctx: export_base.Context) -> tuple[list[Manifest], list[str]]:
    """Tiers first, then every GlobalNetworkPolicy by tier and order."""
    tiers = [t for t in sorted(ctx.estate.tiers) if t.name in ctx.book.tiers]
    first = min((t.order for t in tiers), default=100)
    last = max((t.order for t in tiers), default=100)
    out = [tier("ms-modes", first - 1, "Pass")]
    out += [tier(f"ms-{t.name}", t.order, "Pass") for t in tiers]
    out.append(tier("ms-default", last + 1, "Deny"))
    out += mode_policies(subjects(ctx))
    warnings: list[str] = []
    writer = RuleWriter(ctx)
    for br in ctx.book.rules:
        found = flatten.boxes(br, ctx.inventory)
        warnings += flatten.check_rule(br, found, ctx.inventory, ctx.options.port_level)
        out += writer.policies(br)
    out.append(default_deny(ctx))
    return out, warnings


def tier(name: str, order: int, default_action: str) -> Manifest:
    """A Tier resource."""
    meta = {"name": name, "labels": dict(export_base.MANAGED_BY)}
    return {
        "apiVersion": API_VERSION,
        "kind": "Tier",
        "metadata": meta,
        "spec": {"order": order, "defaultAction": default_action},
    }


def policy(name: str, spec: dict[str, Any], rule: str = "") -> Manifest:
    """A GlobalNetworkPolicy resource."""
    meta: dict[str, Any] = {"name": name, "labels": dict(export_base.MANAGED_BY)}
    if rule:
        meta["annotations"] = {export_base.RULE_ANNOTATION: rule}
    return {"apiVersion": API_VERSION, "kind": "GlobalNetworkPolicy", "metadata": meta, "spec": spec}


def subjects(ctx: export_base.Context) -> str:
    """The pods a policy may apply to: those of the namespaces in scope."""
    return f"{PODS} && projectcalico.org/namespace in {value_set(ctx.namespaces)}"


def value_set(values: Sequence[str]) -> str:
    return "{" + ", ".join(f"'{v}'" for v in values) + "}"


def mode_policies(pods: str) -> list[Manifest]:
    """Pods in alert or visibility mode (by their own label, or their namespace's) pass everything."""
    not_enforced = "{'alert', 'visibility'}"
    common = {
        "tier": "ms-modes",
        "types": ["Ingress", "Egress"],
        "ingress": [{"action": "Allow"}],
        "egress": [{"action": "Allow"}],
    }
    own = f"{pods} && {importer.MODE_LABEL} in {not_enforced} && quarantine != 'true'"
    inherited = f"{pods} && !has({importer.MODE_LABEL}) && quarantine != 'true'"
    return [
        policy("ms-modes.not-enforced", {**common, "order": 10, "selector": own}),
        policy(
            "ms-modes.not-enforced-namespaces",
            {
                **common,
                "order": 20,
                "selector": inherited,
                "namespaceSelector": f"{importer.MODE_LABEL} in {not_enforced}",
            },
        ),
    ]


def default_deny(ctx: export_base.Context) -> Manifest:
    """The last tier's only policy: pods are selected, so its defaultAction Deny ends every walk."""
    egress = []
    for cp in ctx.estate.control_plane:
        rule: dict[str, Any] = {"action": "Allow", "destination": {"nets": [str(cp.network)]}}
        if cp.protocol is not services.Protocol.ANY:
            rule["protocol"] = cp.protocol.value.upper()
            rule["destination"]["ports"] = [port_text(cp.port.first, cp.port.last)]
        egress.append(rule)
    if ctx.options.dns:
        egress += dns_rules()
    spec: dict[str, Any] = {"tier": "ms-default", "order": 10, "selector": subjects(ctx)}
    spec |= {"types": ["Ingress", "Egress"], "ingress": [], "egress": egress}
    return policy("ms-default.deny", spec)


def dns_rules() -> list[dict[str, Any]]:
    """Allow kube-dns on 53/UDP and 53/TCP: the deliberate addition `--no-dns` leaves out."""
    dns = {
        "selector": " && ".join(f"{k} == '{v}'" for k, v in export_base.DNS_LABELS.items()),
        "namespaceSelector": f"projectcalico.org/name == '{export_base.DNS_NAMESPACE}'",
        "ports": [export_base.DNS_PORT],
    }
    return [{"action": "Allow", "protocol": p, "destination": dict(dns)} for p in ("UDP", "TCP")]


class RuleWriter:
    """The policies of each rule, ordered by the rule's place in its tier."""

    def __init__(self, ctx: export_base.Context) -> None:
        self.ctx = ctx
        self.position: dict[str, int] = {}
        self.pods = subjects(ctx)

    def policies(self, br: rulebook.BookRule) -> list[Manifest]:
        rule = br.rule
        order = self.position[rule.tier] = self.position.get(rule.tier, 0) + 10
        tier_name = f"ms-{rule.tier}"
        out = []
        for direction, subjects, peers in (
            ("in", rule.destinations, rule.sources),
            ("out", rule.sources, rule.destinations),
        ):
            entities = [e for p in peers for e in self.entities(p)]
            for k, (ns_sel, sel) in enumerate(self.subjects(subjects, rule.ref)):
                kind = "Ingress" if direction == "in" else "Egress"
                spec: dict[str, Any] = {"tier": tier_name, "order": order, "selector": sel, "types": [kind]}
                if ns_sel:
                    spec["namespaceSelector"] = ns_sel
                spec[kind.lower()] = self.rules(
                    rule, entities, "source" if direction == "in" else "destination"
                )
                suffix = f"-{k + 1}" if k else ""
                name = f"{tier_name}.{export_base.dns_name(rule.name, direction)}{suffix}"
                out.append(policy(name, spec, rule.ref))
        return out

    def subjects(self, peers: Sequence[selectors.Peer], ref: str) -> list[tuple[str, str]]:
        """(namespaceSelector, selector) for each selector peer; address peers holding pods refused."""
        out = []
        for peer in peers:
            if isinstance(peer, selectors.AnyPeer):
                out.append(("", self.pods))
            elif isinstance(peer, selectors.SelectorPeer):
                conj = regions.conjoin(peer.selector)
                if conj is not None:
                    ns_part, pod_part = export_base.split(conj)
                    selected = " && ".join([self.pods, *terms(pod_part)])
                    out.append((expression(ns_part, namespace_key), selected))
            else:
                nets = flatten.endpoints(peer, self.ctx.inventory).nets
                held = [
                    p.name
                    for p in self.ctx.pods
                    if any(addresses.contains(nets, a.network_address) for a in p.addresses)
                ]
                if held:
                    raise errors.InexpressibleError(
                        f"rule {ref}: {peer} holds pod {held[0]} by address; Calico selects the endpoints a "
                        "policy applies to by labels only: name them with a selector",
                        (ref,),
                    )
        return out

    def entities(self, peer: selectors.Peer) -> list[dict[str, Any]]:
        """Entity rules (sources or destinations) one peer stands for; [{}] is everything."""
        if isinstance(peer, selectors.AnyPeer):
            return [{}]
        if isinstance(peer, selectors.SelectorPeer):
            out: list[dict[str, Any]] = []
            conj = regions.conjoin(peer.selector)
            if conj is not None:
                ns_part, pod_part = export_base.split(conj)
                pods: dict[str, Any] = {"selector": " && ".join([PODS, *terms(pod_part)])}
                if ns_part:
                    pods["namespaceSelector"] = expression(ns_part, namespace_key)
                out.append(pods)
            nets = flatten.endpoints(peer, self.ctx.inventory).nets
            if nets:
                out.append({"nets": [str(n) for n in nets]})
            return out
        if isinstance(peer, selectors.CidrPeer):
            entity: dict[str, Any] = {"nets": [str(n) for n in peer.cidrs]}
            if peer.excepts:
                entity["notNets"] = [str(n) for n in peer.excepts]
            return [entity]
        nets = self.ctx.inventory.ip_lists.get(peer.name, ())
        return [{"nets": [str(n) for n in nets]}] if nets else []

    def rules(self, rule: rules.Rule, entities: list[dict[str, Any]], side: str) -> list[dict[str, Any]]:
        """One Calico rule per entity and protocol, all with the microseg rule's action."""
        out = []
        for entity in entities:
            for protocol, ports in protocols(rule.services):
                found: dict[str, Any] = {"action": ACTIONS[rule.action]}
                if protocol:
                    found["protocol"] = protocol
                if entity:
                    found[side] = dict(entity)
                if ports:
                    found.setdefault("destination", {})["ports"] = ports
                if found not in out:
                    out.append(found)
        return out


def protocols(found: Sequence[services.Service]) -> list[tuple[str, list[str | int]]]:
    """(Calico protocol, destination ports) pairs covering the services; ("", []) is everything."""
    out: list[tuple[str, list[str | int]]] = []
    for svc in found:
        for spec in svc.specs:
            if spec.protocol is services.Protocol.ANY:
                return [("", [])]
            if spec.protocol is services.Protocol.ICMP:
                out += [("ICMP", []), ("ICMPv6", [])]
                continue
            out.append((spec.protocol.value.upper(), [port_text(r.first, r.last) for r in spec.ports]))
    unique = dict.fromkeys((protocol, tuple(ports)) for protocol, ports in out)
    return [(protocol, list(ports)) for protocol, ports in unique]


def port_text(first: int, last: int) -> str | int:
    """Calico's port syntax: 80, or "9000:9009"."""
    return first if first == last else f"{first}:{last}"


def namespace_key(key: str) -> str:
    """The namespace label a namespace requirement is about (`projectcalico.org/name` is the name)."""
    return "projectcalico.org/name" if key == importer.NAMESPACE_KEY else key[len(importer.NS_LABEL_PREFIX) :]


def terms(reqs: Sequence[selectors.Requirement], key_of: Any = None) -> list[str]:
    """Calico selector terms for requirements (Calico's `!=` and `not in` hold when the key is absent,
    as Kubernetes' NotIn does)."""
    out = []
    for req in reqs:
        key = key_of(req.key) if key_of else req.key
        values = "{" + ", ".join(f"'{v}'" for v in req.values) + "}"
        if req.operator is Op.EXISTS:
            out.append(f"has({key})")
        elif req.operator is Op.DOES_NOT_EXIST:
            out.append(f"!has({key})")
        elif len(req.values) == 1:
            out.append(f"{key} {'==' if req.operator is Op.IN else '!='} '{req.values[0]}'")
        else:
            out.append(f"{key} {'in' if req.operator is Op.IN else 'not in'} {values}")
    return out


def expression(reqs: Sequence[selectors.Requirement], key_of: Any = None) -> str:
    """A whole selector; empty text when there are no requirements."""
    return " && ".join(terms(reqs, key_of))

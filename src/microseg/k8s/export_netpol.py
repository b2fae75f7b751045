"""microseg policy -> `networking.k8s.io/v1` NetworkPolicy, exact or refused.

Fed by `export_base.Context`; called by `microseg.k8s.export`. NetworkPolicy has no order and no
deny, so the rule book is flattened first (`flatten.flatten`): each allow rule keeps the flows it
decides on its own (earlier denies and earlier passes of its tier cut away), as boxes. Then:

    box destinations (pods by label) -> one ingress policy per namespace and pod selector,
                                        `from` = the box's sources, `ports` = its ports
    box sources (pods by label)      -> one egress policy likewise, `to` = the box's destinations
    every namespace in scope         -> `ms-default-deny` (both directions; egress to the control
                                        plane and, unless --no-dns, to kube-dns on 53 stays
                                        open) and `ms-not-enforced` (alert and visibility pods
                                        are never blocked at their own end)

Only the namespaces in scope (`Context.namespaces`: the inventory's but kube-system and the other
system ones, or `--namespace`) get policies, so kube-system and CoreDNS are never isolated.

A flow is then allowed exactly when microseg allows it: both ends' policies come from the same
boxes. Refused, naming the rule: pods selected by address (a selector cannot say it), ICMP or
protocols NetworkPolicy has no word for, and whatever `flatten` refuses.

What it deliberately does not do: emit anything for flows between two non-pod workloads (their
agents enforce those) or guess: a refusal is better than a near miss.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from microseg import errors
from microseg.engine import rulebook
from microseg.k8s import cluster, export_base, flatten, importer, regions
from microseg.model import addresses, labels, selectors, services
from microseg.model.estate import Endpoint

API_VERSION = "networking.k8s.io/v1"
DEFAULT_DENY = "ms-default-deny"
NOT_ENFORCED = "ms-not-enforced"
Manifest = export_base.Manifest


def write(ctx: export_base.Context) -> tuple[list[Manifest], list[str]]:
    """Every NetworkPolicy, sorted by namespace and name, and the warnings."""
    flat = flatten.flatten(ctx.book, ctx.inventory, port_level=ctx.options.port_level, deny_wins=False)
    out: list[Manifest] = []
    for name in ctx.namespaces:
        out += base_policies(ctx.cluster.namespaces[name], ctx.estate.control_plane, dns=ctx.options.dns)
    writer = RuleWriter(ctx, list(flat.warnings))
    for br, boxes in flat.allowed:
        out += writer.rule_policies(br, boxes)
    return sorted(out, key=lambda m: (m["metadata"]["namespace"], m["metadata"]["name"])), writer.warnings


def policy(namespace: str, name: str, spec: dict[str, Any], rule: str = "") -> Manifest:
    """A NetworkPolicy document."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(export_base.MANAGED_BY)}
    if rule:
        meta["annotations"] = {export_base.RULE_ANNOTATION: rule}
    return {"apiVersion": API_VERSION, "kind": "NetworkPolicy", "metadata": meta, "spec": spec}


def base_policies(
    ns: cluster.Namespace, control_plane: Sequence[Endpoint], *, dns: bool = True
) -> list[Manifest]:
    """Default deny for every pod of the namespace, and allow-all for pods that do not enforce."""
    deny: dict[str, Any] = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    egress = [_control_plane_rule(cp) for cp in control_plane] + ([dns_rule()] if dns else [])
    if egress:
        deny["egress"] = egress
    if export_base.namespace_mode(ns) in export_base.NOT_ENFORCED:
        mode = {"key": importer.MODE_LABEL, "operator": "NotIn", "values": ["enforce"]}
    else:
        mode = {"key": importer.MODE_LABEL, "operator": "In", "values": list(export_base.NOT_ENFORCED)}
    quarantine = {"key": "quarantine", "operator": "NotIn", "values": ["true"]}
    allow = {
        "podSelector": {"matchExpressions": [mode, quarantine]},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{}],
        "egress": [{}],
    }
    return [policy(ns.name, DEFAULT_DENY, deny), policy(ns.name, NOT_ENFORCED, allow)]


def dns_rule() -> dict[str, Any]:
    """Egress to kube-dns on 53/UDP and 53/TCP: the deliberate addition `--no-dns` leaves out."""
    peer = {
        "namespaceSelector": {"matchLabels": {cluster.NAME_LABEL: export_base.DNS_NAMESPACE}},
        "podSelector": {"matchLabels": dict(export_base.DNS_LABELS)},
    }
    ports = [{"protocol": p, "port": export_base.DNS_PORT} for p in ("UDP", "TCP")]
    return {"to": [peer], "ports": ports}


def _control_plane_rule(cp: Endpoint) -> dict[str, Any]:
    rule: dict[str, Any] = {"to": [{"ipBlock": {"cidr": str(cp.network)}}]}
    if cp.protocol is not services.Protocol.ANY:
        port: dict[str, Any] = {"protocol": cp.protocol.value.upper(), "port": cp.port.first}
        if cp.port.last != cp.port.first:
            port["endPort"] = cp.port.last
        rule["ports"] = [port]
    return rule


class RuleWriter:
    """Policies per allow rule; names unique per namespace; warnings collected once each."""

    def __init__(self, ctx: export_base.Context, warnings: list[str]) -> None:
        self.ctx = ctx
        self.warnings = export_base.Warnings(warnings)
        self.names = export_base.Names()
        self.blocks = export_base.IpBlocks(ctx)

    def rule_policies(self, br: rulebook.BookRule, boxes: Sequence[regions.Box]) -> list[Manifest]:
        """The ingress and egress policies of one allow rule: one per namespace and pod selector."""
        groups: dict[tuple[str, str, str], tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        ref = br.rule.ref
        for box in boxes:
            spans = export_base.port_spans(
                box.ports, ref, "NetworkPolicy", skip_icmp=self.ctx.options.skip_icmp, warnings=self.warnings
            )
            if spans == []:
                continue
            port_list = None if spans is None else [port_entry(*span) for span in spans]
            for direction, subject, other in (
                ("in", box.destinations, box.sources),
                ("out", box.sources, box.destinations),
            ):
                entry: dict[str, Any] = {}
                peer_list = self.peers(other)
                if peer_list is not None:
                    entry["from" if direction == "in" else "to"] = peer_list
                if port_list is not None:
                    entry["ports"] = port_list
                for namespace, selector in self.subjects(
                    subject, ref, "destination" if direction == "in" else "source"
                ):
                    key = (direction, namespace, json.dumps(selector, sort_keys=True))
                    _, entries = groups.setdefault(key, (selector, []))
                    if entry not in entries:
                        entries.append(entry)
        out = []
        for (direction, namespace, _), (selector, entries) in sorted(groups.items()):
            name = self.names.take(
                namespace, export_base.dns_name("ms", br.rule.tier, br.rule.name, direction)
            )
            kind = "Ingress" if direction == "in" else "Egress"
            spec = {"podSelector": selector, "policyTypes": [kind], kind.lower(): entries}
            out.append(policy(namespace, name, spec, ref))
        return out

    def subjects(self, side: regions.Endpoints, ref: str, role: str) -> list[tuple[str, dict[str, Any]]]:
        """(namespace, podSelector) for the pods a side holds; pods it holds only by address: refused."""
        pod = export_base.pod_held_by_address(self.ctx, side)
        if pod is not None:
            raise errors.InexpressibleError(
                f"rule {ref}: its {role} includes pod {pod.name} by address ({pod.addresses[0]}); a "
                "NetworkPolicy selects the pods it protects by labels only: name them with a selector",
                (ref,),
            )
        out = []
        for conj in side.conjs:
            ns_part, pod_part = export_base.split(conj)
            for ns in (self.ctx.cluster.namespaces[n] for n in self.ctx.namespaces):
                if selectors.LabelSelector(ns_part).matches(labels.Labels(importer.namespace_labels(ns)[0])):
                    out.append((ns.name, export_base.label_selector(pod_part)))
        return out

    def peers(self, side: regions.Endpoints) -> list[dict[str, Any]] | None:
        """`from`/`to` entries for a side; None when it is everything (the field is then left out)."""
        rest = addresses.exclude(regions.EVERYWHERE, [*side.nets, *self.ctx.options.pod_cidrs])
        if regions.Conj() in side.conjs and not rest:
            return None
        out: list[dict[str, Any]] = []
        for conj in side.conjs:
            ns_part, pod_part = export_base.split(conj)
            entry: dict[str, Any] = {"namespaceSelector": export_base.label_selector(ns_part, namespace_key)}
            if pod_part:
                entry["podSelector"] = export_base.label_selector(pod_part)
            out.append(entry)
        out += [{"ipBlock": block} for block in self.blocks.of(side.nets)]
        return out


def namespace_key(key: str) -> str:
    """The namespace label a namespace requirement is about."""
    return (
        "kubernetes.io/metadata.name"
        if key == importer.NAMESPACE_KEY
        else key[len(importer.NS_LABEL_PREFIX) :]
    )


def port_entry(protocol: str, lo: int, hi: int) -> dict[str, Any]:
    """One `ports` entry: a protocol alone for all of its ports, else `port` (and `endPort`)."""
    entry: dict[str, Any] = {"protocol": protocol}
    if (lo, hi) != (1, 65535):
        entry["port"] = lo
        if hi != lo:
            entry["endPort"] = hi
    return entry

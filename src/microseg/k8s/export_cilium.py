"""microseg policy -> Cilium `cilium.io/v2` CiliumClusterwideNetworkPolicies, exact or refused.

Fed by `export_base.Context`; called by `microseg.k8s.export`. Cilium has allows and denies but no
order: a deny always beats an allow, and there is no pass. So the rule book is flattened with
`deny_wins` (`flatten.flatten`): an allow keeps its flows minus the earlier passes of its tier; a
deny keeps its flows minus earlier passes and minus what earlier rules already allowed (which in
microseg the deny cannot take back). Each box then becomes, per pod selector,

    allow: a policy selecting the box's destination pods with an `ingress` rule, and one selecting
           its source pods with an `egress` rule;
    deny:  the same with `ingressDeny` / `egressDeny`.

Only pods that enforce are ever selected (`microseg.io/mode` enforce, or unset in a namespace that
does not say alert/visibility, or quarantined): Cilium leaves unselected pods alone, which is what
alert and visibility mean at a pod's own end, and only in the namespaces in scope (never
kube-system unless --namespace names it). `ms-default-deny` selects those pods in both directions
with empty rules (default deny) and keeps the control plane open, and kube-dns on 53 unless
--no-dns (a microseg deny of DNS still wins: deny beats allow in Cilium).

Refused, naming the rule: pods matched by address (Cilium matches pods by identity, never by
CIDR), ICMP (Cilium wants each ICMP type listed), and whatever `flatten` refuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from microseg import errors
from microseg.engine import rulebook
from microseg.k8s import export_base, flatten, importer, regions
from microseg.model import addresses, selectors, services, workloads

API_VERSION = "cilium.io/v2"
NAMESPACE = "k8s:io.kubernetes.pod.namespace"
NAMESPACE_LABELS = "k8s:io.cilium.k8s.namespace.labels."
Manifest = export_base.Manifest
Op = selectors.Operator
Req = selectors.Requirement

_FREE = Req("quarantine", Op.NOT_IN, ("true",))
ENFORCING = (
    regions.Conj((Req("quarantine", Op.IN, ("true",)),)),
    regions.Conj((_FREE, Req(importer.MODE_LABEL, Op.IN, (workloads.Mode.ENFORCE.value,)))),
    regions.Conj(
        (
            _FREE,
            Req(importer.MODE_LABEL, Op.DOES_NOT_EXIST),
            Req(importer.namespace_label_key(importer.MODE_LABEL), Op.NOT_IN, export_base.NOT_ENFORCED),
        )
    ),
)
"""Pods that enforce, as disjoint conjunctions: quarantined; else mode enforce; else no mode of their
own in a namespace that does not say alert or visibility."""


def enforcing(ctx: export_base.Context) -> tuple[regions.Conj, ...]:
    """ENFORCING, in the namespaces in scope only."""
    scope = regions.Conj((Req(importer.NAMESPACE_KEY, Op.IN, ctx.namespaces),))
    return tuple(c for conj in ENFORCING if (c := regions.conjoin(scope, conj)) is not None)


def write(ctx: export_base.Context) -> tuple[list[Manifest], list[str]]:
    """Every CiliumClusterwideNetworkPolicy, the default deny first."""
    flat = flatten.flatten(ctx.book, ctx.inventory, port_level=ctx.options.port_level, deny_wins=True)
    writer = RuleWriter(ctx)
    allowed = [(br, writer.allowed_ports(br, boxes)) for br, boxes in flat.allowed]
    every_allow = [b for _, boxes in allowed for b in boxes]
    denied = flatten.where_allowed(flat.denied, every_allow, ctx.inventory.universe)
    out = default_deny(ctx)
    for section, found in (("", allowed), ("Deny", denied)):
        for br, boxes in found:
            out += writer.policies(br, boxes, section)
    return out, [*flat.warnings, *writer.warnings]


def policy(name: str, spec: dict[str, Any], rule: str = "") -> Manifest:
    """A CiliumClusterwideNetworkPolicy."""
    meta: dict[str, Any] = {"name": name, "labels": dict(export_base.MANAGED_BY)}
    if rule:
        meta["annotations"] = {export_base.RULE_ANNOTATION: rule}
    return {
        "apiVersion": API_VERSION,
        "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": meta,
        "spec": spec,
    }


def default_deny(ctx: export_base.Context) -> list[Manifest]:
    """Enforcing pods are isolated both ways; the control plane stays reachable."""
    egress: list[dict[str, Any]] = []
    for cp in ctx.estate.control_plane:
        rule: dict[str, Any] = {"toCIDR": [str(cp.network)]}
        if cp.protocol is not services.Protocol.ANY:
            port: dict[str, Any] = {"port": str(cp.port.first), "protocol": cp.protocol.value.upper()}
            if cp.port.last != cp.port.first:
                port["endPort"] = cp.port.last
            rule["toPorts"] = [{"ports": [port]}]
        egress.append(rule)
    if ctx.options.dns:
        egress.append(dns_rule())
    out = []
    for k, conj in enumerate(enforcing(ctx)):
        # `none` selects no peer: the section exists (so the pod is isolated) and admits nothing;
        # an empty rule `{}` would admit everything.
        nothing_in: list[dict[str, Any]] = [{"fromEntities": ["none"]}]
        nothing_out: list[dict[str, Any]] = [{"toEntities": ["none"]}]
        spec = {"endpointSelector": selector(conj), "ingress": nothing_in, "egress": egress or nothing_out}
        out.append(policy(f"ms-default-deny-{k + 1}", spec))
    return out


def dns_rule() -> dict[str, Any]:
    """Egress to kube-dns on 53/UDP and 53/TCP: the deliberate addition `--no-dns` leaves out."""
    dns = {NAMESPACE: export_base.DNS_NAMESPACE, **export_base.DNS_LABELS}
    ports = [{"port": str(export_base.DNS_PORT), "protocol": p} for p in ("UDP", "TCP")]
    return {"toEndpoints": [{"matchLabels": dns}], "toPorts": [{"ports": ports}]}


class RuleWriter:
    """The policies of one rule's boxes, one per direction and pod selector."""

    def __init__(self, ctx: export_base.Context) -> None:
        self.ctx = ctx
        self.enforcing = enforcing(ctx)
        self.names = export_base.Names()
        self.blocks = export_base.IpBlocks(ctx)
        self.warnings = export_base.Warnings()

    def allowed_ports(self, br: rulebook.BookRule, boxes: Sequence[regions.Box]) -> tuple[regions.Box, ...]:
        """An allow's boxes as they will be written: without ICMP when --skip-icmp (warned), so
        that denies are not widened to cover ICMP nothing allows."""
        if not self.ctx.options.skip_icmp:
            return tuple(boxes)
        out = []
        for box in boxes:
            if box.ports.icmp and not box.ports.is_everything:
                self.warnings.add(f"rule {br.rule.ref}: ICMP left out for pods (--skip-icmp)")
                box = regions.Box(
                    box.sources,
                    box.destinations,
                    regions.Ports(box.ports.ranges, other=box.ports.other),
                    box.rules,
                )
            if not box.empty:
                out.append(box)
        return tuple(out)

    def policies(self, br: rulebook.BookRule, boxes: Sequence[regions.Box], section: str) -> list[Manifest]:
        ref = br.rule.ref
        groups: dict[tuple[str, str], tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        for box in boxes:
            # allows lost ICMP already (allowed_ports); leaving it out of a deny would loosen the deny
            spans = export_base.port_spans(box.ports, ref, "Cilium", skip_icmp=False, warnings=self.warnings)
            if spans == []:
                continue
            ports = None if spans is None else to_ports(spans)
            for direction, subject, other in (
                ("ingress", box.destinations, box.sources),
                ("egress", box.sources, box.destinations),
            ):
                entries = self.entries(other, direction, ports, ref)
                for conj in self.subjects(subject, ref):
                    sel = selector(conj)
                    _, listed = groups.setdefault((direction, repr(sel)), (sel, []))
                    listed.extend(e for e in entries if e not in listed)
        out = []
        for (direction, _), (sel, entries) in sorted(groups.items(), key=lambda g: g[0]):
            name = self.names.take("", export_base.dns_name("ms", br.rule.tier, br.rule.name, direction))
            out.append(policy(name, {"endpointSelector": sel, direction + section: entries}, ref))
        return out

    def subjects(self, side: regions.Endpoints, ref: str) -> list[regions.Conj]:
        """The side's pods that enforce, as conjunctions (pods held only by address: refused)."""
        self.refuse_addressed_pods(side, ref)
        found = (regions.conjoin(conj, e) for conj in side.conjs for e in self.enforcing)
        return [c for c in found if c is not None]

    def refuse_addressed_pods(self, side: regions.Endpoints, ref: str) -> None:
        pod = export_base.pod_held_by_address(self.ctx, side)
        if pod is not None:
            raise errors.InexpressibleError(
                f"rule {ref}: pod {pod.name} is matched by its address ({pod.addresses[0]}); Cilium "
                "matches pods by identity (labels), never by CIDR: name them with a selector",
                (ref,),
            )

    def entries(
        self, side: regions.Endpoints, direction: str, ports: list[dict[str, Any]] | None, ref: str
    ) -> list[dict[str, Any]]:
        """Rule entries for the peers of one direction, each with the box's ports."""
        self.refuse_addressed_pods(side, ref)
        prefix = "from" if direction == "ingress" else "to"
        l3: list[dict[str, Any]] = []
        rest = addresses.exclude(regions.EVERYWHERE, [*side.nets, *self.ctx.options.pod_cidrs])
        if regions.Conj() in side.conjs and not rest:
            l3.append({prefix + "Entities": ["all"]})
        else:
            if side.conjs:
                l3.append({prefix + "Endpoints": [selector(c) for c in side.conjs]})
            if side.nets:
                l3.append({prefix + "CIDRSet": self.blocks.of(side.nets)})
        out = []
        for entry in l3:
            if ports is not None:
                entry["toPorts"] = ports
            out.append(entry)
        return out


def to_ports(spans: Sequence[tuple[str, int, int]]) -> list[dict[str, Any]]:
    """`toPorts` for (PROTOCOL, first, last) spans (Cilium wants the port as text)."""
    ports: list[dict[str, Any]] = []
    for protocol, lo, hi in spans:
        port: dict[str, Any] = {"port": str(lo), "protocol": protocol}
        if hi != lo:
            port["endPort"] = hi
        ports.append(port)
    return [{"ports": ports}]


def label_key(key: str) -> str:
    """The Cilium label a workload label key means: namespace keys get their `k8s:` names."""
    if key == importer.NAMESPACE_KEY:
        return NAMESPACE
    if key.startswith(importer.NS_LABEL_PREFIX):
        return NAMESPACE_LABELS + key[len(importer.NS_LABEL_PREFIX) :]
    return key


def selector(conj: regions.Conj) -> dict[str, Any]:
    """An endpoint selector, with Cilium's names for the namespace keys."""
    return export_base.label_selector(conj.requirements, label_key)

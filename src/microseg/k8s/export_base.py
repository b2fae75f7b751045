"""What every exporter shares: the context (estate, pods as workloads, rule book), options, names.

Built once per export by `context`, which also refuses what no format can say: labels that label
rules would give pods (Kubernetes selectors only see a pod's own labels) and --pod-cidr values that
do not hold every pod. Read by `export_netpol`, `export_calico` and `export_cilium`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from microseg import errors
from microseg.engine import rulebook
from microseg.k8s import cluster, flatten, importer, regions
from microseg.model import addresses, labelrules, selectors, workloads
from microseg.model.estate import Estate

MANAGED_BY = {"app.kubernetes.io/managed-by": "microseg"}
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
"""Left alone unless `--namespace` names them: isolating them cuts DNS and the cluster's own parts."""
DNS_NAMESPACE = "kube-system"
DNS_LABELS = {"k8s-app": "kube-dns"}
"""What CoreDNS (and kube-dns) pods carry, in every distribution that ships them as `kube-dns`."""
DNS_PORT = 53
DNS_ALLOWED = f"allowed DNS to kube-dns in {DNS_NAMESPACE} on {DNS_PORT}/udp,tcp; --no-dns drops it"
DNS_DROPPED = "--no-dns: pods will not resolve names unless a rule allows DNS"
RULE_ANNOTATION = "microseg.io/rule"
NOT_ENFORCED = ("alert", "visibility")

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Options:
    """How to export."""

    port_level: bool = False
    """Accept services with a process or user constraint, enforcing their ports only (warned)."""
    pod_cidrs: tuple[addresses.Network, ...] = ()
    """The cluster's pod networks: lets `any` exclude pods by address, exactly for future pods too."""
    skip_icmp: bool = False
    """NetworkPolicy and Cilium: leave ICMP out of allow rules that reach pods (neither can say "all of
    ICMP"), warned; a deny naming ICMP is still refused, since leaving it out would loosen it."""
    namespaces: tuple[str, ...] = ()
    """The namespaces whose pods are isolated (`--namespace`); empty: the inventory's, without
    SYSTEM_NAMESPACES. Nothing exported ever selects a pod elsewhere."""
    dns: bool = True
    """Let every isolated pod reach kube-dns on 53/UDP and 53/TCP (`--no-dns` turns it off): an
    addition beyond the policy, always warned, because without it no pod resolves a name."""


@dataclass(frozen=True)
class Context:
    """What every format needs: the estate, the pods as workloads, the rule book, the cluster."""

    estate: Estate
    cluster: cluster.Cluster
    pods: tuple[workloads.Workload, ...]
    book: rulebook.RuleBook
    inventory: flatten.Inventory
    options: Options
    notes: tuple[str, ...]
    namespaces: tuple[str, ...]
    """The namespaces whose pods are isolated, sorted: the only ones any policy selects pods in."""


def context(est: Estate, found: cluster.Cluster, options: Options) -> Context:
    """Pods as workloads beside the estate's other workloads, checked for what cannot be exported."""
    imported = importer.import_pods(found)
    for pod in imported.workloads:
        effective = labelrules.effective_labels(pod, est.label_rules)
        if effective != pod.labels:
            added = ", ".join(f"{k}={v}" for k, v in effective.items() if pod.labels.get(k) != v)
            raise errors.InexpressibleError(
                f"label rules give pod {pod.name} {added}; Kubernetes selectors see only a pod's own labels "
                "(label the pod itself, or narrow the label rule, e.g. with os=linux)"
            )
    _check_pod_cidrs(imported.workloads, est, options.pod_cidrs)
    book = rulebook.RuleBook(est)
    inventory = flatten.Inventory.of(est, imported.workloads, options.pod_cidrs)
    scope, scope_notes = namespaces_in_scope(found, options)
    notes = (*imported.notes, *scope_notes, DNS_ALLOWED if options.dns else DNS_DROPPED)
    return Context(est, found, imported.workloads, book, inventory, options, notes, scope)


def namespaces_in_scope(found: cluster.Cluster, options: Options) -> tuple[tuple[str, ...], list[str]]:
    """`--namespace` (each must be in the inventory, since NetworkPolicies live in one), else every
    namespace of the inventory but the system ones; and a note per system namespace left alone."""
    if options.namespaces:
        unknown = sorted(set(options.namespaces) - set(found.namespaces))
        if unknown:
            raise errors.ValidationError(f"--namespace {unknown[0]}: no such namespace in the inventory")
        return tuple(sorted(set(options.namespaces))), []
    left = sorted(n for n in found.namespaces if n in SYSTEM_NAMESPACES)
    notes = [
        f"namespace {n} left alone (no policy selects its pods); --namespace {n} includes it" for n in left
    ]
    return tuple(sorted(n for n in found.namespaces if n not in SYSTEM_NAMESPACES)), notes


def _check_pod_cidrs(
    pods: Sequence[workloads.Workload], est: Estate, cidrs: Sequence[addresses.Network]
) -> None:
    if not cidrs:
        return
    for pod in pods:
        for net in pod.addresses:
            if not addresses.contains(cidrs, net.network_address):
                raise errors.ValidationError(f"pod {pod.name} ({net.network_address}) is outside --pod-cidr")
    for w in est.workloads:
        if w.kind is not workloads.WorkloadKind.POD and any(
            n.overlaps(c) for n in w.addresses for c in cidrs if n.version == c.version
        ):
            raise errors.ValidationError(f"workload {w.name} has an address inside --pod-cidr")


def namespace_mode(ns: cluster.Namespace) -> str:
    """The mode a namespace gives pods without a mode label of their own."""
    return ns.labels.get(importer.MODE_LABEL, workloads.Mode.ENFORCE.value)


_UNSAFE = re.compile(r"[^a-z0-9.-]+")


def dns_name(*parts: str) -> str:
    """A DNS subdomain (what Kubernetes names must be) from parts: lowercase, `_` and others -> `-`."""
    text = _UNSAFE.sub("-", "-".join(p for p in parts if p).lower()).strip("-.")
    text = re.sub(r"-{2,}", "-", text)[:240].strip("-.")
    return text or "microseg"


class Names:
    """Unique names per scope (a namespace, or the cluster): a repeat gets `-2`, `-3`, ..."""

    def __init__(self) -> None:
        self._used: dict[tuple[str, str], int] = {}

    def take(self, scope: str, base: str) -> str:
        count = self._used.get((scope, base), 0) + 1
        self._used[(scope, base)] = count
        return base if count == 1 else f"{base}-{count}"


class IpBlocks:
    """Networks as few ipBlocks as possible: a network the policy names (an IP list, a CIDR) with
    `except` holes where that is shorter than listing what remains."""

    def __init__(self, ctx: Context) -> None:
        named: list[addresses.Network] = [*regions.EVERYWHERE, *ctx.options.pod_cidrs]
        named += [n for nets in ctx.inventory.ip_lists.values() for n in nets]
        named += [c for lst in ctx.estate.ip_lists for c in lst.cidrs]
        for rule in ctx.estate.rules:
            for peer in (*rule.sources, *rule.destinations):
                if isinstance(peer, selectors.CidrPeer):
                    named += peer.cidrs
        self.candidates = sorted(set(named), key=lambda n: (n.version, n.prefixlen, int(n.network_address)))

    def of(self, nets: Sequence[addresses.Network]) -> list[dict[str, Any]]:
        """ipBlocks covering exactly `nets`."""
        left = list(addresses.collapse(nets))
        out: list[dict[str, Any]] = []
        for cidr in self.candidates:
            inside = [n for n in left if n.version == cidr.version and n.subnet_of(cidr)]  # type: ignore[arg-type]
            if not inside:
                continue
            holes = addresses.exclude([cidr], inside)
            if len(holes) < len(inside) or inside == [cidr]:
                block: dict[str, Any] = {"cidr": str(cidr)}
                if holes:
                    block["except"] = [str(h) for h in holes]
                out.append(block)
                left = [n for n in left if n not in inside]
        out += [{"cidr": str(n)} for n in left]
        return out


def split(conj: regions.Conj) -> tuple[tuple[selectors.Requirement, ...], tuple[selectors.Requirement, ...]]:
    """A conjunction's namespace requirements (`k8s.namespace`, `k8s.ns.*`) and pod requirements."""
    ns = tuple(r for r in conj.requirements if importer.is_namespace_key(r.key))
    return ns, tuple(r for r in conj.requirements if not importer.is_namespace_key(r.key))


def label_selector(
    reqs: Sequence[selectors.Requirement], key_of: Callable[[str], str] | None = None
) -> dict[str, Any]:
    """A Kubernetes-style label selector: single-value In as matchLabels, the rest as
    matchExpressions; `key_of` renames keys (namespace keys, Cilium's label sources)."""
    match_labels: dict[str, str] = {}
    expressions: list[dict[str, Any]] = []
    for req in reqs:
        key = key_of(req.key) if key_of else req.key
        if req.operator is selectors.Operator.IN and len(req.values) == 1:
            match_labels[key] = req.values[0]
            continue
        expr: dict[str, Any] = {"key": key, "operator": req.operator.value}
        if req.values:
            expr["values"] = list(req.values)
        expressions.append(expr)
    out: dict[str, Any] = {}
    if match_labels:
        out["matchLabels"] = match_labels
    if expressions:
        out["matchExpressions"] = expressions
    return out


class Warnings(list[str]):
    """Warnings in the order they first came, each once."""

    def add(self, text: str) -> None:
        if text not in self:
            self.append(text)


def port_spans(
    found: regions.Ports, ref: str, fmt: str, *, skip_icmp: bool, warnings: Warnings
) -> list[tuple[str, int, int]] | None:
    """(PROTOCOL, first, last) spans of a box's ports for formats that can only name TCP, UDP and
    SCTP ports; None when every protocol and port is meant. ICMP is left out (warned) when
    `skip_icmp`, else refused with everything that cannot be said."""
    if found.is_everything:
        return None
    if found.icmp and skip_icmp:
        warnings.add(f"rule {ref}: ICMP left out for pods (--skip-icmp)")
        found = regions.Ports(found.ranges, icmp=False, other=found.other)
    if found.icmp or found.other:
        what = "ICMP" if found.icmp else "protocols other than TCP, UDP and SCTP"
        hint = ", or --skip-icmp to leave ICMP out of allow rules)" if found.icmp else ")"
        raise errors.InexpressibleError(
            f"rule {ref} reaches pods with {what}; {fmt} can only name TCP, UDP and SCTP ports "
            f"(use --format calico, which can{hint}",
            (ref,),
        )
    return [(p.value.upper(), lo, hi) for p, spans in found.ranges for lo, hi in spans]


def pod_held_by_address(ctx: Context, side: regions.Endpoints) -> workloads.Workload | None:
    """The first pod a side holds by its address only (not by labels): what formats that select
    pods by labels cannot say. None when there is none."""
    for pod in ctx.pods:
        held = any(addresses.contains(side.nets, n.network_address) for n in pod.addresses)
        if held and not side.matches_labels(pod.labels):
            return pod
    return None

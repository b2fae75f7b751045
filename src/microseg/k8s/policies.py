"""NetworkPolicy documents -> `netpol` values, strictly, with the API server's defaults applied.

Fed by `microseg.k8s.manifests`. Unlike pods, a NetworkPolicy is read whole and strictly: an
unknown field, a wrong type or a value the API server would refuse is a problem, because a field
we do not understand could change what the policy allows. Defaults, as the API server applies
them: a port's protocol is TCP; `policyTypes` is Ingress, plus Egress when there are egress rules.

What it deliberately does not do: decide what the policy allows (`microseg.k8s.reachability`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from microseg.k8s import netpol, pods
from microseg.model import addresses, selectors
from microseg.policyfile.reader import Reader, describe

API_VERSION = "networking.k8s.io/v1"
Path = tuple[str | int, ...]


def network_policy(r: Reader, data: dict[str, Any]) -> netpol.NetworkPolicy | None:
    """One NetworkPolicy object."""
    meta = pods.metadata(r, data)
    name, namespace = pods.name_and_namespace(r, meta, ("metadata",))
    spec = r.mapping(
        data.get("spec"),
        ("spec",),
        ("podSelector", "policyTypes", "ingress", "egress"),
        required=("podSelector",),
    )
    if spec is None:
        return None
    subject = selector(r, spec.get("podSelector"), ("spec", "podSelector"))
    ingress = rules(r, spec, "ingress", "from")
    egress = rules(r, spec, "egress", "to")
    types = policy_types(r, spec, bool(egress))
    if name is None or subject is None or ingress is None or egress is None or types is None:
        return None
    return netpol.NetworkPolicy(
        namespace, name, subject, ingress, egress, "Ingress" in types, "Egress" in types
    )


def policy_types(r: Reader, spec: dict[str, Any], has_egress: bool) -> set[str] | None:
    """`policyTypes`, or its default."""
    if "policyTypes" not in spec:
        return {"Ingress", "Egress"} if has_egress else {"Ingress"}
    found = r.texts(spec["policyTypes"], ("spec", "policyTypes"))
    if found is None:
        return None
    for i, value in enumerate(found):
        if value not in ("Ingress", "Egress"):
            r.error(("spec", "policyTypes", i), f"'{value}' is not Ingress or Egress")
            return None
    return set(found)


def rules(r: Reader, spec: dict[str, Any], direction: str, side: str) -> tuple[netpol.PolicyRule, ...] | None:
    """`ingress` (peers in `from`) or `egress` (peers in `to`); absent means no rules."""
    if spec.get(direction) is None:
        return ()
    out: list[netpol.PolicyRule | None] = []
    for path, entry in r.items(spec[direction], ("spec", direction)):
        out.append(rule(r, entry, path, side))
    return None if None in out else tuple(x for x in out if x is not None)


def rule(r: Reader, entry: Any, path: Path, side: str) -> netpol.PolicyRule | None:
    """One rule: peers (absent or empty: every peer) and ports (absent or empty: every port)."""
    m = r.mapping(entry, path, (side, "ports"))
    if m is None:
        return None
    peer_list = [peer(r, v, p) for p, v in r.items(m[side], (*path, side))] if m.get(side) is not None else []
    port_list = (
        [port(r, v, p) for p, v in r.items(m["ports"], (*path, "ports"))]
        if m.get("ports") is not None
        else []
    )
    if None in peer_list or None in port_list:
        return None
    return netpol.PolicyRule(
        tuple(p for p in peer_list if p is not None), tuple(p for p in port_list if p is not None)
    )


def peer(r: Reader, entry: Any, path: Path) -> netpol.Peer | None:
    """A peer: ipBlock alone, or podSelector and/or namespaceSelector."""
    m = r.mapping(entry, path, ("podSelector", "namespaceSelector", "ipBlock"))
    if m is None:
        return None
    present = [k for k in ("podSelector", "namespaceSelector", "ipBlock") if m.get(k) is not None]
    if not present:
        r.error(path, "a peer needs podSelector, namespaceSelector or ipBlock")
        return None
    if "ipBlock" in present:
        if len(present) > 1:
            r.error(path, "ipBlock cannot be combined with podSelector or namespaceSelector in one peer")
            return None
        block = ip_block(r, m["ipBlock"], (*path, "ipBlock"))
        return None if block is None else netpol.Peer(ip_block=block)
    pod_sel = selector(r, m["podSelector"], (*path, "podSelector")) if "podSelector" in present else None
    ns_sel = (
        selector(r, m["namespaceSelector"], (*path, "namespaceSelector"))
        if "namespaceSelector" in present
        else None
    )
    if (pod_sel is None and "podSelector" in present) or (ns_sel is None and "namespaceSelector" in present):
        return None
    return netpol.Peer(pod_selector=pod_sel, namespace_selector=ns_sel)


def ip_block(r: Reader, entry: Any, path: Path) -> netpol.IpBlock | None:
    """`cidr` and `except`, each except strictly inside the cidr (as the API server demands)."""
    m = r.mapping(entry, path, ("cidr", "except"), required=("cidr",))
    if m is None or "cidr" not in m:
        return None
    cidr = r.guard((*path, "cidr"), lambda: addresses.network(str(m["cidr"])))
    texts = r.texts(m["except"], (*path, "except")) if m.get("except") is not None else []
    if cidr is None or texts is None:
        return None
    cuts: list[addresses.Network] = []
    for i, text in enumerate(texts):
        cut = r.guard((*path, "except", i), lambda t=text: addresses.network(t))  # type: ignore[misc]
        if cut is None:
            return None
        if cut.version != cidr.version or not cut.subnet_of(cidr) or cut == cidr:  # type: ignore[arg-type]
            r.error((*path, "except", i), f"except {cut} must lie strictly inside cidr {cidr}")
            return None
        cuts.append(cut)
    return netpol.IpBlock(cidr, tuple(cuts))


def port(r: Reader, entry: Any, path: Path) -> netpol.PolicyPort | None:
    """A port entry: protocol (default TCP), port (number or name; absent: every port), endPort."""
    m = r.mapping(entry, path, ("protocol", "port", "endPort"))
    if m is None:
        return None
    protocol = pods.protocol_of(r, m, path)
    value = m.get("port")
    number: int | str | None = None
    if isinstance(value, str):
        if not pods.is_port_name(value):
            r.error(
                (*path, "port"),
                f"'{value}' is not a port number or a port name (1-15 lowercase "
                "letters, digits, '-', with a letter)",
            )
            return None
        number = value
    elif value is not None:
        number = pods.port_number(r, value, (*path, "port"))
        if number is None:
            return None
    end = end_port(r, m, path, number)
    if protocol is None or end is False:
        return None
    return netpol.PolicyPort(protocol, number, end or None)


def end_port(r: Reader, m: dict[str, Any], path: Path, number: int | str | None) -> int | bool | None:
    """`endPort`: needs a numeric `port` not above it. False: wrong (reported)."""
    if m.get("endPort") is None:
        return None
    end = pods.port_number(r, m["endPort"], (*path, "endPort"))
    if end is None:
        return False
    if not isinstance(number, int):
        r.error((*path, "endPort"), "endPort needs a numeric port")
        return False
    if end < number:
        r.error((*path, "endPort"), f"endPort {end} is below port {number}")
        return False
    return end


def selector(r: Reader, entry: Any, path: Path) -> selectors.LabelSelector | None:
    """A label selector: matchLabels and matchExpressions (both absent: everything)."""
    m = r.mapping({} if entry is None else entry, path, ("matchLabels", "matchExpressions"))
    if m is None:
        return None
    found: Mapping[str, str] | None = {}
    if m.get("matchLabels") is not None:
        found = r.labels(m["matchLabels"], (*path, "matchLabels"))
    exprs: list[selectors.Requirement | None] = []
    if m.get("matchExpressions") is not None:
        exprs = [expression(r, v, p) for p, v in r.items(m["matchExpressions"], (*path, "matchExpressions"))]
    if found is None or None in exprs:
        return None
    return r.guard(path, lambda: selectors.LabelSelector.of(found, tuple(e for e in exprs if e is not None)))


def expression(r: Reader, entry: Any, path: Path) -> selectors.Requirement | None:
    """One matchExpressions entry."""
    m = r.mapping(entry, path, ("key", "operator", "values"), required=("key", "operator"))
    if m is None or "key" not in m or "operator" not in m:
        return None
    op = r.choice(selectors.Operator, m["operator"], (*path, "operator"))
    values = r.texts(m["values"], (*path, "values")) if m.get("values") is not None else []
    key = r.text(m["key"], (*path, "key"))
    if op is None or values is None or key is None:
        return None
    return r.guard(path, lambda: selectors.Requirement(key, op, tuple(values)))


def describe_kind(data: Any) -> str:
    """How a problem names a document: `NetworkPolicy shop/allow-web`."""
    if not isinstance(data, dict):
        return describe(data)
    raw = data.get("metadata")
    meta: dict[str, Any] = raw if isinstance(raw, dict) else {}
    name = meta.get("name", "?")
    ns = meta.get("namespace")
    return f"{data.get('kind', '?')} {ns + '/' if isinstance(ns, str) else ''}{name}"

"""One builder per named kind: a document's fields -> a model object, problems collected.

Fed by `microseg.policyfile.loader` with one document (or List item) at a time; returns the name
and the built object (None when anything is wrong: the problem is already recorded). Rules are
built later by `microseg.policyfile.policies`, because they name services, IP lists and tiers of
other documents; cross-document checks live in `microseg.policyfile.checks`.
"""

from __future__ import annotations

import functools
from typing import Any

from microseg.model import addresses, estate, iplists, labelrules, labels, names, services, tiers, workloads
from microseg.policyfile import nodes
from microseg.policyfile.reader import Reader

API_VERSION = "microseg.io/v1"

Built = tuple[str | None, Any]


def metadata(
    r: Reader, doc: dict[str, Any], *, with_labels: bool = False, required: bool = True, grammar: bool = True
) -> tuple[str | None, labels.Labels | None]:
    """metadata.name, and metadata.labels where the kind has labels (None: wrong, reported).
    `grammar`: the name is an object name (`model.names`), as it is for every kind the server
    stores by name; a Policy's is not (it groups rules, and the server stores each rule)."""
    if not required and "metadata" not in doc:
        return None, labels.Labels()
    allowed = ("name", "labels") if with_labels else ("name",)
    meta = r.mapping(doc.get("metadata"), ("metadata",), allowed, required=("name",))
    if meta is None:
        return None, None
    name = r.text(meta["name"], ("metadata", "name")) if "name" in meta else None
    if name is not None and grammar:  # one grammar with the server: what validates, the API accepts
        r.guard(("metadata",), lambda: names.check(name))
    found = r.labels(meta["labels"], ("metadata", "labels")) if "labels" in meta else labels.Labels()
    return name, found


def spec(r: Reader, doc: dict[str, Any], allowed: tuple[str, ...], required: tuple[str, ...]) -> Any:
    """The `spec` mapping (None when it is missing or wrong)."""
    if "spec" not in doc and required:
        r.error((), "missing required field 'spec'")
        return None
    return r.mapping(doc.get("spec", {}), ("spec",), allowed, required)


def networks(r: Reader, value: Any, path: nodes.Path) -> tuple[addresses.Network, ...] | None:
    """A list of addresses or CIDRs (one alone is accepted too); None when any is wrong."""
    if isinstance(value, str):
        net = network(r, value, path)
        return None if net is None else (net,)
    texts = r.texts(value, path)
    if texts is None:
        return None
    found = [network(r, text, (*path, i)) for i, text in enumerate(texts)]
    if not found:
        r.error(path, "needs at least one address or CIDR")
        return None
    return None if None in found else tuple(n for n in found if n is not None)


def network(r: Reader, value: Any, path: nodes.Path) -> addresses.Network | None:
    """One address or CIDR."""
    text = r.text(value, path)
    return None if text is None else r.guard(path, lambda: addresses.network(text))


def workload(r: Reader, doc: dict[str, Any]) -> Built:
    """kind: Workload."""
    name, found = metadata(r, doc, with_labels=True)
    m = spec(r, doc, ("kind", "addresses", "attributes", "attributeSources", "mode"), ("addresses",))
    if m is None:
        return name, None
    nets = networks(r, m["addresses"], ("spec", "addresses")) if "addresses" in m else None
    attrs = r.str_map(m.get("attributes", {}), ("spec", "attributes"))
    sources = attribute_sources(r, m.get("attributeSources", {}), ("spec", "attributeSources"))
    kind = r.choice(workloads.WorkloadKind, m.get("kind", "vm"), ("spec", "kind"))
    mode = r.choice(workloads.Mode, m.get("mode", "visibility"), ("spec", "mode"))
    if name is None or nets is None or attrs is None or sources is None:
        return name, None
    if kind is None or mode is None or found is None:
        return name, None
    fields = {"name": ("metadata", "name"), "addresses": ("spec", "addresses")}
    fields["attributeSources"] = ("spec", "attributeSources")
    build = functools.partial(
        workloads.Workload,
        name,
        kind,
        nets,
        found,
        attrs,
        mode,
        attribute_sources=sources,
        mode_declared="mode" in m,  # an unset mode stays unset: the enrolling token's mode fills it
    )
    return name, r.guard((), build, fields)


def attribute_sources(r: Reader, value: Any, path: nodes.Path) -> dict[str, str] | None:
    """spec.attributeSources: attribute name -> who said it (operator, enrollment, agent). A source
    for an attribute the workload lacks is accepted: it means nothing."""
    raw = r.str_map(value, path)
    if raw is None:
        return None
    found = {key: r.choice(workloads.Provenance, v, (*path, key)) for key, v in raw.items()}
    return {k: v.value for k, v in found.items() if v is not None} if None not in found.values() else None


def ip_list(r: Reader, doc: dict[str, Any]) -> Built:
    """kind: IPList."""
    name, _ = metadata(r, doc)
    m = spec(r, doc, ("cidrs", "except", "description"), ("cidrs",))
    if m is None:
        return name, None
    cidrs = networks(r, m["cidrs"], ("spec", "cidrs")) if "cidrs" in m else None
    cuts = networks(r, m["except"], ("spec", "except")) if "except" in m else ()
    desc = r.optional_text(m, "description", ("spec",)) or ""
    if name is None or cidrs is None or cuts is None:
        return name, None
    return name, r.guard(("spec",), lambda: iplists.IpList(name, cidrs, cuts, desc))


PORT_FIELDS = ("port", "endPort", "protocol")


def port_spec(r: Reader, item: Any, path: nodes.Path) -> services.PortSpec | None:
    """One `{port, endPort, protocol}` entry; protocol defaults to tcp."""
    m = r.mapping(item, path, PORT_FIELDS)
    if m is None:
        return None
    proto = r.choice(services.Protocol, m.get("protocol", "tcp"), (*path, "protocol"), any_case=True)
    if proto is None:
        return None
    if "port" not in m:
        if "endPort" in m:
            r.error((*path, "endPort"), "endPort needs port")
            return None
        return r.guard(path, lambda: services.PortSpec(proto))
    first = r.integer(m["port"], (*path, "port"))
    last = r.integer(m["endPort"], (*path, "endPort")) if "endPort" in m else first
    if first is None or last is None:
        return None
    rng = r.guard((*path, "endPort" if "endPort" in m else "port"), lambda: services.PortRange(first, last))
    fields = {"ports": ("protocol",)}  # "icmp has no ports": the protocol is what contradicts the port
    return None if rng is None else r.guard(path, lambda: services.PortSpec(proto, (rng,)), fields)


SERVICE_TEXT = {
    "process": "process",
    "user": "user",
    "clientProcess": "client_process",
    "clientUser": "client_user",
}


def service(r: Reader, doc: dict[str, Any]) -> Built:
    """kind: Service."""
    name, _ = metadata(r, doc)
    m = spec(r, doc, ("ports", *SERVICE_TEXT), ("ports",))
    if name == services.ANY_SERVICE.name:
        r.error(("metadata", "name"), "the service name 'any' is reserved (rules write `services: any`)")
        name = None
    if m is None:
        return name, None
    items = r.items(m["ports"], ("spec", "ports")) if "ports" in m else []
    found = [port_spec(r, item, p) for p, item in items]
    text = {attr: r.optional_text(m, key, ("spec",)) for key, attr in SERVICE_TEXT.items()}
    wrong = (
        "ports" not in m or None in found or any(text[a] is None for k, a in SERVICE_TEXT.items() if k in m)
    )
    if name is None or wrong:
        return name, None
    specs = tuple(s for s in found if s is not None)
    return name, r.guard(("spec",), lambda: services.Service(name, specs, **text))


def tier(r: Reader, doc: dict[str, Any]) -> Built:
    """kind: Tier."""
    name, _ = metadata(r, doc, grammar=False)  # a tier's own grammar is stricter than `names`
    # checked now, not when the tier is built: a broken order must not hide a bad name
    where = ("metadata", "name")
    checked = None if name is None else r.guard(where, lambda: tiers.check_name(name), {"name": ()})
    m = spec(r, doc, ("order", "description"), ("order",))
    if m is None:
        return name, None
    order = r.integer(m["order"], ("spec", "order")) if "order" in m else None
    desc = r.optional_text(m, "description", ("spec",)) or ""
    if name is None or checked is None or order is None:
        return name, None
    return name, r.guard((), lambda: tiers.Tier(order, name, desc), {"name": ("metadata", "name")})


MATCH_FIELDS = ("hostname", "hostnameRegex", "os", "cidr")


def label_rule(r: Reader, doc: dict[str, Any]) -> Built:
    """kind: LabelRule."""
    name, _ = metadata(r, doc)
    m = spec(r, doc, ("priority", "match", "labels", "trust"), ("match", "labels"))
    if m is None:
        return name, None
    match = r.mapping(m["match"], ("spec", "match"), MATCH_FIELDS) if "match" in m else None
    found = r.labels(m["labels"], ("spec", "labels")) if "labels" in m else None
    priority = r.integer(m.get("priority", 100), ("spec", "priority"))
    trusted = trust(r, m["trust"], ("spec", "trust")) if "trust" in m else labelrules.DEFAULT_TRUST
    if match is None:
        return name, None
    text = {k: r.optional_text(match, k, ("spec", "match")) for k in MATCH_FIELDS[:3]}
    cidr = network(r, match["cidr"], ("spec", "match", "cidr")) if "cidr" in match else None
    wrong = any(text[k] is None for k in text if k in match) or ("cidr" in match and cidr is None)
    if name is None or found is None or priority is None or trusted is None or wrong:
        return name, None
    fields = {"match": ("match",), "hostnameRegex": ("match", "hostnameRegex"), "labels": ("labels",)}
    conditions = (text["hostname"], text["hostnameRegex"], text["os"], cidr)
    build = functools.partial(labelrules.LabelRule, name, found, *conditions, priority, trust=trusted)
    return name, r.guard(("spec",), build, fields)


def trust(r: Reader, value: Any, path: nodes.Path) -> frozenset[str] | None:
    """spec.trust: the provenances a label rule's conditions may read (an empty list is refused
    by the model: a rule that trusts nobody)."""
    texts = r.texts(value, path)
    if texts is None:
        return None
    found = [r.choice(workloads.Provenance, t, (*path, i)) for i, t in enumerate(texts)]
    return None if None in found else frozenset(p.value for p in found if p is not None)


def settings(r: Reader, doc: dict[str, Any]) -> tuple[tuple[estate.Endpoint, ...], str | None] | None:
    """kind: Settings -> (control-plane endpoints, quarantine allow-list name); None when wrong."""
    metadata(r, doc, required=False)
    m = spec(r, doc, ("controlPlane", "quarantineAllow"), ())
    if m is None:
        return None
    items = r.items(m.get("controlPlane", []), ("spec", "controlPlane"))
    endpoints = [endpoint(r, item, path) for path, item in items]
    allow = r.optional_text(m, "quarantineAllow", ("spec",))
    if None in endpoints or ("quarantineAllow" in m and allow is None):
        return None
    return tuple(e for e in endpoints if e is not None), allow


def endpoint(r: Reader, item: Any, path: nodes.Path) -> estate.Endpoint | None:
    """One `{address, port, endPort, protocol}` control-plane endpoint."""
    m = r.mapping(item, path, ("address", *PORT_FIELDS), ("address", "port"))
    if m is None:
        return None
    net = network(r, m["address"], (*path, "address")) if "address" in m else None
    ports = port_spec(r, {k: m[k] for k in PORT_FIELDS if k in m}, path) if "port" in m else None
    if net is None or ports is None:
        return None
    if not ports.protocol.has_ports:
        r.error((*path, "protocol"), "a control-plane endpoint needs a protocol with ports (tcp, udp, sctp)")
        return None
    return estate.Endpoint(net, ports.ports[0], ports.protocol)

"""One builder per kind: a document's fields -> model objects, problems collected by the reader.

Fed by `microseg.policyfile.loader` with parsed documents; feeds it back model objects. Rules are
built later (`microseg.policyfile.rules`) because they name services and tiers of other documents.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from microseg.model import addresses, estate, iplists, labelrules, labels, services, tiers, workloads
from microseg.policyfile import nodes
from microseg.policyfile.reader import Reader

API_VERSION = "microseg.io/v1"
KINDS = ("Workload", "IPList", "Service", "Tier", "LabelRule", "Policy", "Settings", "List")


@dataclass
class Named:
    """A built object with its name and where it was defined."""

    kind: str
    name: str
    value: Any
    reader: Reader
    path: nodes.Path


def metadata(
    r: Reader, doc: dict[str, Any], *, with_labels: bool = False
) -> tuple[str | None, labels.Labels]:
    """metadata.name (and metadata.labels where the kind has labels)."""
    allowed = ("name", "labels", "annotations") if with_labels else ("name", "annotations")
    meta = r.mapping(doc.get("metadata"), ("metadata",), allowed, required=("name",))
    if meta is None:
        return None, labels.Labels()
    name = r.string(meta.get("name"), ("metadata", "name")) if "name" in meta else None
    found = labels.Labels()
    if with_labels and "labels" in meta:
        raw = r.str_map(meta["labels"], ("metadata", "labels"))
        built = r.guard(("metadata", "labels"), lambda: labels.Labels(raw or {}))
        found = built if built is not None else found
    return name, found


def networks(r: Reader, value: Any, path: nodes.Path) -> tuple[addresses.Network, ...]:
    """A list of addresses or CIDRs (one string is accepted too)."""
    texts = r.strings([value] if isinstance(value, str) else value, path)
    out = []
    for i, text in enumerate(texts or []):
        net = r.guard((*path, i), functools.partial(addresses.network, text))
        if net is not None:
            out.append(net)
    return tuple(out)


def workload(r: Reader, doc: dict[str, Any]) -> tuple[str | None, workloads.Workload | None]:
    """kind: Workload."""
    name, found = metadata(r, doc, with_labels=True)
    spec = r.mapping(doc.get("spec"), ("spec",), ("kind", "addresses", "attributes", "mode"), ("addresses",))
    if spec is None or name is None:
        return name, None
    nets = networks(r, spec.get("addresses"), ("spec", "addresses"))
    attrs = r.str_map(spec.get("attributes", {}), ("spec", "attributes")) or {}
    kind = _enum(r, workloads.WorkloadKind, spec.get("kind", "vm"), ("spec", "kind"))
    mode = _enum(r, workloads.Mode, spec.get("mode", "enforce"), ("spec", "mode"))
    if kind is None or mode is None or not nets:
        return name, None
    built = r.guard(("spec",), lambda: workloads.Workload(name, kind, nets, found, attrs, mode))
    return name, built


def ip_list(r: Reader, doc: dict[str, Any]) -> tuple[str | None, iplists.IpList | None]:
    """kind: IPList."""
    name, _ = metadata(r, doc)
    spec = r.mapping(doc.get("spec"), ("spec",), ("cidrs", "except", "description"), ("cidrs",))
    if spec is None or name is None:
        return name, None
    cidrs = networks(r, spec.get("cidrs"), ("spec", "cidrs"))
    cuts = networks(r, spec.get("except", []), ("spec", "except"))
    desc = str(spec.get("description", ""))
    return name, r.guard(("spec",), lambda: iplists.IpList(name, cidrs, cuts, desc)) if cidrs else None


PORT_FIELDS = ("port", "endPort", "protocol")


def port_specs(r: Reader, value: Any, path: nodes.Path) -> tuple[services.PortSpec, ...] | None:
    """`[{port: 80}, {port: 8000, endPort: 8100, protocol: tcp}, {protocol: icmp}]`."""
    specs = []
    for item_path, item in r.items(value, path):
        spec = port_spec(r, item, item_path)
        if spec is None:
            return None
        specs.append(spec)
    return tuple(specs)


def port_spec(r: Reader, item: Any, path: nodes.Path) -> services.PortSpec | None:
    """One `{port, endPort, protocol}` entry."""
    m = r.mapping(item, path, PORT_FIELDS)
    if m is None:
        return None
    proto = _enum(r, services.Protocol, str(m.get("protocol", "tcp")).lower(), (*path, "protocol"))
    if proto is None:
        return None
    if "port" not in m:
        if "endPort" in m:
            r.error((*path, "endPort"), "endPort needs port")
            return None
        return r.guard(path, lambda: services.PortSpec(proto))
    first = r.integer(m["port"], (*path, "port"))
    last = r.integer(m.get("endPort", first), (*path, "endPort"))
    if first is None or last is None:
        return None
    rng = r.guard((*path, "port"), lambda: services.PortRange(first, last))
    return None if rng is None else r.guard(path, lambda: services.PortSpec(proto, (rng,)))


def service(r: Reader, doc: dict[str, Any]) -> tuple[str | None, services.Service | None]:
    """kind: Service."""
    name, _ = metadata(r, doc)
    allowed = ("ports", "process", "user", "clientProcess", "clientUser", "description")
    spec = r.mapping(doc.get("spec"), ("spec",), allowed, ("ports",))
    if spec is None or name is None:
        return name, None
    specs = port_specs(r, spec.get("ports"), ("spec", "ports"))
    text = {k: r.string(spec[k], ("spec", k)) if k in spec else None for k in allowed[1:5]}
    if specs is None:
        return name, None
    return name, r.guard(
        ("spec",),
        lambda: services.Service(
            name, specs, text["process"], text["user"], text["clientProcess"], text["clientUser"]
        ),
    )


def tier(r: Reader, doc: dict[str, Any]) -> tuple[str | None, tiers.Tier | None]:
    """kind: Tier."""
    name, _ = metadata(r, doc)
    spec = r.mapping(doc.get("spec"), ("spec",), ("order", "description"), ("order",))
    if spec is None or name is None:
        return name, None
    order = r.integer(spec.get("order"), ("spec", "order"))
    if order is None:
        return name, None
    return name, r.guard(
        ("metadata", "name"), lambda: tiers.Tier(order, name, str(spec.get("description", "")))
    )


def label_rule(r: Reader, doc: dict[str, Any]) -> tuple[str | None, labelrules.LabelRule | None]:
    """kind: LabelRule."""
    name, _ = metadata(r, doc)
    spec = r.mapping(doc.get("spec"), ("spec",), ("priority", "match", "labels"), ("match", "labels"))
    if spec is None or name is None:
        return name, None
    match = r.mapping(spec.get("match"), ("spec", "match"), ("hostname", "hostnameRegex", "os", "cidr")) or {}
    raw = r.str_map(spec.get("labels"), ("spec", "labels"))
    found = r.guard(("spec", "labels"), lambda: labels.Labels(raw or {}))
    priority = r.integer(spec.get("priority", 100), ("spec", "priority"))
    cidr = networks(r, match["cidr"], ("spec", "match", "cidr")) if "cidr" in match else ()
    if found is None or priority is None or ("cidr" in match and not cidr):
        return name, None
    return name, r.guard(
        ("spec", "match"),
        lambda: labelrules.LabelRule(
            name,
            found,
            match.get("hostname"),
            match.get("hostnameRegex"),
            match.get("os"),
            cidr[0] if cidr else None,
            priority,
        ),
    )


def settings(r: Reader, doc: dict[str, Any]) -> tuple[tuple[estate.Endpoint, ...], str | None]:
    """kind: Settings -> (control-plane endpoints, quarantine allow list name)."""
    metadata(r, doc)
    spec = r.mapping(doc.get("spec"), ("spec",), ("controlPlane", "quarantineAllow")) or {}
    endpoints = []
    for path, item in r.items(spec.get("controlPlane", []), ("spec", "controlPlane")):
        m = r.mapping(item, path, ("address", "port", "protocol"), ("address", "port"))
        if m is None:
            continue
        nets = networks(r, m.get("address"), (*path, "address"))
        port = r.integer(m.get("port"), (*path, "port"))
        proto = _enum(r, services.Protocol, str(m.get("protocol", "tcp")).lower(), (*path, "protocol"))
        rng = r.guard((*path, "port"), functools.partial(services.PortRange, port, port)) if port else None
        if nets and rng and proto:
            endpoints.append(estate.Endpoint(nets[0], rng, proto))
    allow = (
        r.string(spec["quarantineAllow"], ("spec", "quarantineAllow")) if "quarantineAllow" in spec else None
    )
    return tuple(endpoints), allow


def _enum(r: Reader, enum: Any, value: Any, path: nodes.Path) -> Any:
    try:
        return enum(value)
    except ValueError:
        r.error(path, f"{value!r} is not one of {', '.join(e.value for e in enum)}")
        return None

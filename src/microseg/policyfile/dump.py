"""Estate -> policy-file YAML, stable and diff-friendly.

Documents are sorted by kind then name, keys come in a fixed order, unordered lists are sorted and
rules come in (priority, name) order, so dumping the same estate twice, or the same estate loaded
in another order, gives the same text. `load(dump(e)) == e` (tests check it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from microseg.model import estate, rules, selectors, services, tiers
from microseg.policyfile import kinds


def dump(est: estate.Estate) -> str:
    """One multi-document YAML text."""
    docs = [*_workloads(est), *_named(est), *_policies(est), *_settings(est)]
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False, width=110)


def dump_dir(est: estate.Estate, directory: str | Path) -> Path:
    """Write `estate.yaml` into `directory` (created when missing); return its path."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    out = path / "estate.yaml"
    out.write_text(dump(est), encoding="utf-8")
    return out


def _doc(
    kind: str, name: str | None, spec: dict[str, Any], labels: dict[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {} if name is None else {"name": name}
    if labels:
        meta["labels"] = dict(sorted(labels.items()))
    return {"apiVersion": kinds.API_VERSION, "kind": kind, "metadata": meta, "spec": spec}


def _workloads(est: estate.Estate) -> list[dict[str, Any]]:
    out = []
    for w in sorted(est.workloads, key=lambda w: w.name):
        spec: dict[str, Any] = {"kind": w.kind.value, "addresses": [str(a) for a in w.addresses]}
        if w.attributes:
            spec["attributes"] = dict(w.attributes)
        spec["mode"] = w.mode.value
        out.append(_doc("Workload", w.name, spec, dict(w.labels)))
    return out


def _named(est: estate.Estate) -> list[dict[str, Any]]:
    out = []
    for i in sorted(est.ip_lists, key=lambda i: i.name):
        spec: dict[str, Any] = {"cidrs": [str(c) for c in i.cidrs]}
        if i.excepts:
            spec["except"] = [str(c) for c in i.excepts]
        if i.description:
            spec["description"] = i.description
        out.append(_doc("IPList", i.name, spec))
    for r in sorted(est.label_rules, key=lambda r: r.name):
        match = {
            k: v
            for k, v in (
                ("hostname", r.hostname_glob),
                ("hostnameRegex", r.hostname_regex),
                ("os", r.os),
                ("cidr", str(r.cidr) if r.cidr else None),
            )
            if v is not None
        }
        out.append(
            _doc("LabelRule", r.name, {"priority": r.priority, "match": match, "labels": dict(r.labels)})
        )
    for s in sorted(est.services, key=lambda s: s.name):
        out.append(_doc("Service", s.name, _service_spec(s)))
    builtin = {t.name: t for t in tiers.BUILTIN_TIERS}
    for t in sorted(est.tiers):
        if builtin.get(t.name) != t:
            spec = {"order": t.order, **({"description": t.description} if t.description else {})}
            out.append(_doc("Tier", t.name, spec))
    return out


def _service_spec(s: services.Service) -> dict[str, Any]:
    spec: dict[str, Any] = {"ports": [_port(p) for p in s.specs]}
    for key, value in (
        ("process", s.process),
        ("user", s.user),
        ("clientProcess", s.client_process),
        ("clientUser", s.client_user),
    ):
        if value is not None:
            spec[key] = value
    return spec


def _port(spec: services.PortSpec) -> dict[str, Any] | list[dict[str, Any]]:
    if not spec.ports:
        return {"protocol": spec.protocol.value}
    r = spec.ports[0]
    out: dict[str, Any] = {"port": r.first, "protocol": spec.protocol.value}
    if r.last != r.first:
        out["endPort"] = r.last
    return out


def _policies(est: estate.Estate) -> list[dict[str, Any]]:
    grouped: dict[tuple[str, str], list[rules.Rule]] = {}
    for rule in est.rules:
        grouped.setdefault((rule.policy or f"{rule.tier}-rules", rule.tier), []).append(rule)
    named = {s.name: s for s in est.services}
    out = []
    for (policy, tier), items in sorted(grouped.items()):
        owners = {r.owner for r in items}
        owner = owners.pop() if len(owners) == 1 else ""
        spec: dict[str, Any] = {"tier": tier}
        if owner:
            spec["owner"] = owner
        spec["rules"] = [_rule(r, named, owner) for r in sorted(items, key=lambda r: (r.priority, r.name))]
        out.append(_doc("Policy", policy, spec))
    return out


def _rule(rule: rules.Rule, named: dict[str, services.Service], owner: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": rule.name,
        "priority": rule.priority,
        "action": rule.action.value,
        "from": _peers(rule.sources),
        "to": _peers(rule.destinations),
        "services": _services(rule.services, named),
    }
    if rule.not_before:
        out["notBefore"] = rule.not_before.strftime("%Y-%m-%dT%H:%M:%SZ")
    if rule.not_after:
        out["notAfter"] = rule.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
    if rule.owner and rule.owner != owner:
        out["owner"] = rule.owner
    if rule.reason:
        out["reason"] = rule.reason
    if not rule.enabled:
        out["enabled"] = False
    return out


def _peers(peers: tuple[selectors.Peer, ...]) -> Any:
    out: list[Any] = []
    for p in peers:
        if isinstance(p, selectors.AnyPeer):
            out.append("any")
        elif isinstance(p, selectors.SelectorPeer):
            out.append({"selector": str(p.selector) if p.selector.requirements else {"matchLabels": {}}})
        elif isinstance(p, selectors.IpListPeer):
            out.append({"ipList": p.name})
        else:
            cidr: dict[str, Any] = {"cidr": [str(c) for c in p.cidrs]}
            if p.excepts:
                cidr["except"] = [str(c) for c in p.excepts]
            out.append(cidr)
    return "any" if out == ["any"] else out


def _services(svcs: tuple[services.Service, ...], named: dict[str, services.Service]) -> Any:
    out: list[Any] = []
    for s in svcs:
        if s == services.ANY_SERVICE:
            out.append("any")
        elif named.get(s.name) == s:
            out.append(s.name)
        else:
            out.extend(_port(p) for p in s.specs)
    return "any" if out == ["any"] else out


def _settings(est: estate.Estate) -> list[dict[str, Any]]:
    if not est.control_plane and est.quarantine_allow is None:
        return []
    spec: dict[str, Any] = {}
    if est.control_plane:
        spec["controlPlane"] = [
            {"address": str(e.network), "port": e.port.first, "protocol": e.protocol.value}
            for e in est.control_plane
        ]
    if est.quarantine_allow is not None:
        spec["quarantineAllow"] = est.quarantine_allow
    return [_doc("Settings", "settings", spec)]

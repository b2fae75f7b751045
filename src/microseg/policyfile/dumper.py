"""Estate -> policy-file YAML, stable and diff-friendly: the inverse of the loader.

The estate is put in canonical order first (`canonical.ordered`), then written as documents
sorted by kind (definitions before what refers to them: Tier, IPList, Service, LabelRule,
Workload, Policy, Invariant, Settings) and by name, keys in a fixed order, rules by (priority, name). Dumping
the same estate twice, or the same estate in another order, gives the same text, and
`load(dump(e)) == e` for every estate the loader or the generator makes.

Rules refer to a declared Service by name when they use exactly that service, and write a port
spec inline when they use what an inline spec loads as. A service that is neither (an estate built
by hand) is written as a Service document of its own, so nothing is lost; a rule using a service
that differs from the declared one of the same name cannot be written and is an error.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from microseg import errors
from microseg.model import estate, iplists, labelrules, rules, selectors, services, tiers, workloads
from microseg.model.invariants import Invariant
from microseg.policyfile import canonical, kinds, loader

_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # same text as SafeDumper, 4x faster
Doc = dict[str, Any]


def dump(est: estate.Estate) -> str:
    """The estate as one multi-document YAML text."""
    return _text(documents(est))


def dump_dir(est: estate.Estate, directory: str | Path, *, replace: bool = False) -> list[Path]:
    """Write the estate as a policy tree (the layout of the example estate) and return the files.

    tiers.yaml, iplists.yaml, services.yaml, label-rules.yaml, workloads.yaml, policies/<name>.yaml
    and settings.yaml; kinds with nothing to write get no file. A directory that already holds
    policy files is refused unless `replace` is true, in which case those files are deleted first:
    a stale file left beside the new ones would be loaded with them.
    """
    root = Path(directory)
    old = loader.policy_files(root) if root.is_dir() else []
    if old and not replace:
        raise errors.UserError(
            f"{root} already holds {len(old)} policy file(s), e.g. {old[0]}; "
            "write into an empty directory or pass replace=True"
        )
    for path in old:
        path.unlink()
    written = []
    for relative, docs in _layout(documents(est)):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_text(docs), encoding="utf-8")
        written.append(path)
    return written


def documents(est: estate.Estate) -> list[Doc]:
    """The estate as policy-file documents (plain data), in dump order."""
    est = canonical.ordered(est)
    refs, extra = _service_refs(est)
    return [
        *(_tier(t) for t in est.tiers if t not in tiers.BUILTIN_TIERS),
        *(_ip_list(i) for i in est.ip_lists),
        *(_service(s) for s in sorted([*est.services, *extra], key=canonical.service_key)),
        *(_label_rule(r) for r in est.label_rules),
        *(_workload(w) for w in est.workloads),
        *_policies(est, refs),
        *(_invariant(i, refs) for i in est.invariants),
        *_settings(est),
    ]


def _text(docs: list[Doc]) -> str:
    return yaml.dump_all(
        docs, Dumper=_DUMPER, sort_keys=False, default_flow_style=False, width=100, allow_unicode=True
    )


FILES = {"Tier": "tiers.yaml", "IPList": "iplists.yaml", "Service": "services.yaml"}
FILES |= {"LabelRule": "label-rules.yaml", "Workload": "workloads.yaml", "Settings": "settings.yaml"}
FILES |= {"Invariant": "invariants.yaml"}


def _layout(docs: list[Doc]) -> list[tuple[Path, list[Doc]]]:
    files: dict[Path, list[Doc]] = {}
    used: Counter[str] = Counter()
    for doc in docs:
        if doc["kind"] == "Policy":
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", doc["metadata"]["name"]).strip("-.").lower() or "policy"
            used[slug] += 1  # names that differ only in case or punctuation get their own files
            name = slug if used[slug] == 1 else f"{slug}-{used[slug]}"
            files[Path("policies") / f"{name}.yaml"] = [doc]
        else:
            files.setdefault(Path(FILES[doc["kind"]]), []).append(doc)
    return list(files.items())


def _doc(kind: str, name: str, spec: Doc, labels: dict[str, str] | None = None) -> Doc:
    meta: Doc = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": kinds.API_VERSION, "kind": kind, "metadata": meta, "spec": spec}


def _optional(**fields: Any) -> Doc:
    """The fields that are set (not None, not empty), in the order given."""
    return {key: value for key, value in fields.items() if value not in (None, "", [], {})}


def _tier(t: tiers.Tier) -> Doc:
    return _doc("Tier", t.name, {"order": t.order, **_optional(description=t.description)})


def _ip_list(i: iplists.IpList) -> Doc:
    cuts = [_address(c) for c in i.excepts]
    spec = _optional(cidrs=[_address(c) for c in i.cidrs], **{"except": cuts}, description=i.description)
    return _doc("IPList", i.name, spec)


def _service(s: services.Service) -> Doc:
    return _doc(
        "Service",
        s.name,
        _optional(
            ports=[p for spec in s.specs for p in _ports(spec)],
            process=s.process,
            user=s.user,
            clientProcess=s.client_process,
            clientUser=s.client_user,
        ),
    )


def _ports(spec: services.PortSpec) -> list[Doc]:
    if not spec.ports:
        return [{"protocol": spec.protocol.value}]
    out = []
    for r in spec.ports:
        item: Doc = {"port": r.first}
        if r.last != r.first:
            item["endPort"] = r.last
        out.append({**item, "protocol": spec.protocol.value})
    return out


def _label_rule(r: labelrules.LabelRule) -> Doc:
    match = _optional(
        hostname=r.hostname_glob,
        hostnameRegex=r.hostname_regex,
        os=r.os,
        cidr=str(r.cidr) if r.cidr else None,
    )
    spec: Doc = {"priority": r.priority, "match": match, "labels": dict(r.labels)}
    if r.trust != labelrules.DEFAULT_TRUST:  # the default is not written: files say only what differs
        spec["trust"] = [p.value for p in workloads.Provenance if p.value in r.trust]
    return _doc("LabelRule", r.name, spec)


def _workload(w: workloads.Workload) -> Doc:
    spec = {"kind": w.kind.value, "addresses": [_address(a) for a in w.addresses]}
    spec |= _optional(attributes=dict(w.attributes), attributeSources=dict(w.attribute_sources))
    if w.mode_set:  # an unset mode is not written: enrollment gives it the token's mode
        spec["mode"] = w.mode.value
    return _doc("Workload", w.name, spec, dict(w.labels))


def _address(net: Any) -> str:
    return str(net.network_address) if net.num_addresses == 1 else str(net)


def _service_refs(est: estate.Estate) -> tuple[dict[services.Service, Any], list[services.Service]]:
    """How each service used by a rule is written, and the services to declare in addition."""
    declared = {s.name: s for s in est.services}
    refs: dict[services.Service, Any] = {services.ANY_SERVICE: "any"}
    extra: dict[str, services.Service] = {}
    users = [(f"rule {r.ref}", r.services) for r in est.rules]
    users += [(f"invariant {i.name}", i.services) for i in est.invariants]
    for user, used in users:
        for s in used:
            if s in refs:
                continue
            other = declared.get(s.name, extra.get(s.name, s))
            if other != s:
                raise errors.ValidationError(
                    f"{user} uses a service {s.name} ({s}) that differs from the service of "
                    f"that name ({other}); the estate cannot be written as policy files",
                    "services",
                )
            inline = _ports(s.specs[0]) if canonical.is_inline(s) else []
            if len(inline) == 1:
                refs[s] = inline[0]
                continue
            refs[s] = s.name
            if s.name not in declared:
                extra[s.name] = s
    return refs, list(extra.values())


def _policies(est: estate.Estate, refs: dict[services.Service, Any]) -> list[Doc]:
    grouped: dict[tuple[str, str], list[rules.Rule]] = {}
    for rule in est.rules:
        grouped.setdefault((rule.policy or f"{rule.tier}-rules", rule.tier), []).append(rule)
    tiers_of = Counter(name for name, _ in grouped)
    out = []
    for (name, tier), items in grouped.items():
        owners = {r.owner for r in items}
        owner = owners.pop() if len(owners) == 1 else ""
        spec = {"tier": tier, **_optional(owner=owner)}
        spec["rules"] = [_rule(r, refs, owner) for r in sorted(items, key=lambda r: (r.priority, r.name))]
        # A policy holds one tier; one name used in several tiers becomes one policy per tier.
        out.append(_doc("Policy", name if tiers_of[name] == 1 else f"{name}-{tier}", spec))
    return sorted(out, key=lambda d: str(d["metadata"]["name"]))


def _rule(rule: rules.Rule, refs: dict[services.Service, Any], owner: str) -> Doc:
    out: Doc = {
        "name": rule.name,
        "priority": rule.priority,
        "action": rule.action.value,
        "from": _peers(rule.sources),
        "to": _peers(rule.destinations),
        "services": _bare_any([refs[s] for s in rule.services]),
    }
    out |= _optional(notBefore=_moment(rule.not_before), notAfter=_moment(rule.not_after))
    out |= _optional(owner=rule.owner if rule.owner != owner else None, reason=rule.reason)
    if not rule.enabled:
        out["enabled"] = False
    return out


def _invariant(inv: Invariant, refs: dict[services.Service, Any]) -> Doc:
    spec: Doc = {"type": inv.shape.value, "from": _peers(inv.sources), "to": _peers(inv.destinations)}
    spec["services"] = _bare_any([refs[s] for s in inv.services])
    return _doc("Invariant", inv.name, spec | _optional(description=inv.description))


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
            cidrs = [_address(c) for c in p.cidrs]
            cuts = [_address(c) for c in p.excepts]
            out.append(_optional(cidr=cidrs[0] if len(cidrs) == 1 else cidrs, **{"except": cuts}))
    return _bare_any(out)


def _bare_any(items: list[Any]) -> Any:
    """`any` alone reads best bare: `from: any`, `services: any`."""
    return "any" if items == ["any"] else items


def _moment(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _settings(est: estate.Estate) -> list[Doc]:
    if not est.control_plane and est.quarantine_allow is None:
        return []
    endpoints = []
    for e in est.control_plane:
        item: Doc = {"address": _address(e.network), "port": e.port.first}
        if e.port.last != e.port.first:
            item["endPort"] = e.port.last
        endpoints.append({**item, "protocol": e.protocol.value})
    spec = _optional(controlPlane=endpoints, quarantineAllow=est.quarantine_allow)
    return [_doc("Settings", "settings", spec)]

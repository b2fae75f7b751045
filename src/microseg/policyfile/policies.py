"""kind: Policy -> rules, once every service, IP list and tier of the estate is known.

Fed by the loader with the named objects of all documents; peers, service references and time
windows are checked here, each problem at its own field path.
"""

from __future__ import annotations

import difflib
import functools
from typing import Any

from microseg.model import rules, selectors, services
from microseg.policyfile import kinds, nodes
from microseg.policyfile.reader import Reader

RULE_FIELDS = (
    "name",
    "priority",
    "action",
    "from",
    "to",
    "services",
    "notBefore",
    "notAfter",
    "owner",
    "reason",
    "enabled",
)


def policy(
    r: Reader, doc: dict[str, Any], known: dict[str, Any]
) -> tuple[str | None, list[tuple[nodes.Path, rules.Rule]]]:
    """All rules of one Policy document, with the path of each (for later duplicate checks)."""
    name, _ = kinds.metadata(r, doc)
    spec = r.mapping(doc.get("spec"), ("spec",), ("tier", "owner", "description", "rules"), ("tier", "rules"))
    if spec is None or name is None:
        return name, []
    tier = r.string(spec.get("tier"), ("spec", "tier"))
    if tier is not None and tier not in known["tiers"]:
        r.error(("spec", "tier"), f"unknown tier '{tier}'{_suggest(tier, known['tiers'])}")
        tier = None
    owner = str(spec.get("owner", ""))
    out = []
    for path, item in r.items(spec.get("rules"), ("spec", "rules")):
        built = rule(r, item, path, (name, tier, owner), known)
        if built is not None:
            out.append((path, built))
    return name, out


def rule(
    r: Reader, item: Any, path: nodes.Path, context: tuple[str, str | None, str], known: dict[str, Any]
) -> rules.Rule | None:
    """One rule of a policy."""
    policy_name, tier, owner = context
    m = r.mapping(item, path, RULE_FIELDS, ("name", "priority", "action", "from", "to", "services"))
    if m is None:
        return None
    name = r.string(m.get("name"), (*path, "name"))
    priority = r.integer(m.get("priority"), (*path, "priority"))
    action = kinds._enum(r, rules.Action, m.get("action"), (*path, "action")) if "action" in m else None
    sources = peers(r, m.get("from"), (*path, "from"), known)
    destinations = peers(r, m.get("to"), (*path, "to"), known)
    svcs = service_refs(r, m.get("services"), (*path, "services"), known)
    fields = (("not_before", "notBefore"), ("not_after", "notAfter"))
    window = {k: r.moment(m[f], (*path, f)) if f in m else None for k, f in fields}
    enabled = r.boolean(m.get("enabled", True), (*path, "enabled"))
    if (
        name is None
        or priority is None
        or action is None
        or sources is None
        or destinations is None
        or svcs is None
        or tier is None
        or enabled is None
        or any(f in m and window[k] is None for k, f in fields)
    ):
        return None
    return r.guard(
        path,
        lambda: rules.Rule(
            name,
            tier,
            priority,
            action,
            sources,
            destinations,
            svcs,
            window["not_before"],
            window["not_after"],
            str(m.get("owner", owner)),
            str(m.get("reason", "")),
            policy_name,
            bool(enabled),
        ),
    )


def peers(
    r: Reader, value: Any, path: nodes.Path, known: dict[str, Any]
) -> tuple[selectors.Peer, ...] | None:
    """`any`, or a list of `{selector}`, `{ipList}`, `{cidr, except}` and `any`."""
    if value == "any":
        return (selectors.AnyPeer(),)
    out: list[selectors.Peer] = []
    ok = True
    for item_path, item in r.items(value, path):
        built = peer(r, item, item_path, known)
        ok = ok and built is not None
        if built is not None:
            out.append(built)
    if ok and not out and isinstance(value, list):
        r.error(path, "needs at least one peer (write `any` for everything)")
        return None
    return tuple(out) if ok and isinstance(value, list) else None


def peer(r: Reader, item: Any, path: nodes.Path, known: dict[str, Any]) -> selectors.Peer | None:
    """One peer."""
    if item == "any":
        return selectors.AnyPeer()
    m = r.mapping(item, path, ("selector", "ipList", "cidr", "except", "any"))
    if m is None:
        return None
    if len({"selector", "ipList", "cidr", "any"} & m.keys()) != 1:
        r.error(path, "a peer is exactly one of selector, ipList, cidr (with except) or any")
        return None
    if "any" in m:
        if m["any"] is not True:
            r.error((*path, "any"), "any: must be true")
            return None
        return selectors.AnyPeer()
    if "selector" in m:
        sel = selector(r, m["selector"], (*path, "selector"))
        return None if sel is None else selectors.SelectorPeer(sel)
    if "ipList" in m:
        name = r.string(m["ipList"], (*path, "ipList"))
        if name is not None and name not in known["ip_lists"]:
            r.error((*path, "ipList"), f"unknown ip list '{name}'{_suggest(name, known['ip_lists'])}")
            return None
        return None if name is None else selectors.IpListPeer(name)
    cidrs = kinds.networks(r, m["cidr"], (*path, "cidr"))
    cuts = kinds.networks(r, m.get("except", []), (*path, "except"))
    return r.guard(path, lambda: selectors.CidrPeer(cidrs, cuts)) if cidrs else None


def selector(r: Reader, value: Any, path: nodes.Path) -> selectors.LabelSelector | None:
    """kubectl text (`env=prod,role in (web,app)`) or matchLabels / matchExpressions."""
    if isinstance(value, str):
        return r.guard(path, lambda: selectors.LabelSelector.parse(value))
    m = r.mapping(value, path, ("matchLabels", "matchExpressions"))
    if m is None:
        return None
    match_labels = r.str_map(m.get("matchLabels", {}), (*path, "matchLabels"))
    exprs = []
    for p, e in r.items(m.get("matchExpressions", []), (*path, "matchExpressions")):
        em = r.mapping(e, p, ("key", "operator", "values"), ("key", "operator"))
        if em is None:
            return None
        values = r.strings(em.get("values", []), (*p, "values"))
        operator = kinds._enum(r, selectors.Operator, em["operator"], (*p, "operator"))
        if operator is None:
            return None
        req = r.guard(
            p, functools.partial(selectors.Requirement, str(em["key"]), operator, tuple(values or ()))
        )
        if req is None:
            return None
        exprs.append(req)
    return r.guard(path, lambda: selectors.LabelSelector.of(match_labels or {}, tuple(exprs)))


def service_refs(
    r: Reader, value: Any, path: nodes.Path, known: dict[str, Any]
) -> tuple[services.Service, ...] | None:
    """`any`, or names of Service objects and inline port specs."""
    if value == "any":
        return (services.ANY_SERVICE,)
    out = []
    for item_path, item in r.items(value, path):
        if item == "any":
            out.append(services.ANY_SERVICE)
        elif isinstance(item, str):
            found = known["services"].get(item)
            if found is None:
                r.error(item_path, f"unknown service '{item}'{_suggest(item, known['services'])}")
                return None
            out.append(found)
        else:
            spec = kinds.port_spec(r, item, item_path)
            if spec is None:
                return None
            out.append(services.Service(f"inline:{spec}", (spec,)))
    if isinstance(value, list) and not value:
        r.error(path, "needs at least one service (write `any` for every port)")
    return tuple(out) if out else None


def _suggest(name: str, known: Any) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    if close:
        return f" (did you mean '{close[0]}'?)"
    names = sorted(known)
    return (
        f" (known: {', '.join(names[:8])}{', ...' if len(names) > 8 else ''})" if names else " (none defined)"
    )

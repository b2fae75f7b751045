"""kind: Policy -> rules, once every service, IP list and tier of the estate is known.

Fed by the loader with each Policy document and the named objects of all documents (`Known`);
peers, selectors, service references and time windows are checked here, each problem at its own
field path. Duplicate rule names and priority ties across policies are `checks`' business.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from microseg.model import iplists, labels, rules, selectors, services, tiers
from microseg.policyfile import canonical, checks, kinds, nodes
from microseg.policyfile.reader import Reader, suggest

RULE_FIELDS = (
    "name",
    "priority",
    "action",
    "from",
    "to",
    "services",
    # optional from here on (RULE_REQUIRED holds the ones above)
    "notBefore",
    "notAfter",
    "owner",
    "reason",
    "enabled",
)
RULE_REQUIRED = ("name", "priority", "action", "from", "to", "services")
PEER_KINDS = ("selector", "ipList", "cidr", "any")


@dataclass
class Known:
    """The named objects rules may refer to."""

    tiers: dict[str, tiers.Tier | None] = field(default_factory=dict)
    ip_lists: dict[str, iplists.IpList | None] = field(default_factory=dict)
    services: dict[str, services.Service | None] = field(default_factory=dict)
    """None: defined, but broken (already reported); references to it are not reported again."""


def policy(r: Reader, doc: dict[str, Any], known: Known) -> tuple[str | None, list[checks.RuleAt]]:
    """The rules of one Policy document, each with where it is (for the cross-policy checks)."""
    name, _ = kinds.metadata(r, doc, grammar=False)
    m = kinds.spec(r, doc, ("tier", "owner", "rules"), ("tier", "rules"))
    if m is None:
        return name, []
    tier = r.text(m["tier"], ("spec", "tier")) if "tier" in m else None
    if tier is not None and tier not in known.tiers:
        r.error(("spec", "tier"), f"unknown tier '{tier}'{suggest(tier, known.tiers)}")
    if tier is not None and known.tiers.get(tier) is None:
        tier = None  # the rules are still checked, but none is built
    owner = r.optional_text(m, "owner", ("spec",)) or ""
    out = []
    for path, item in r.items(m["rules"], ("spec", "rules")) if "rules" in m else []:
        built = rule(r, item, path, known, policy=name or "", tier=tier, owner=owner)
        claimed = (item.get("name"), item.get("priority")) if isinstance(item, dict) else (None, None)
        if tier is not None and isinstance(claimed[0], str) and type(claimed[1]) is int:
            out.append(checks.RuleAt(r, path, tier, claimed[0], claimed[1], built))
    return name, out


def rule(
    r: Reader, item: Any, path: nodes.Path, known: Known, *, policy: str, tier: str | None, owner: str
) -> rules.Rule | None:
    """One rule of a policy (None when anything is wrong, or the policy's tier is)."""
    m = r.mapping(item, path, RULE_FIELDS, RULE_REQUIRED)
    if m is None or any(k not in m for k in RULE_REQUIRED):
        return None
    text = r.text(m["name"], (*path, "name"))
    # checked now, not when the rule is built: a broken peer must not hide a bad name
    name = None if text is None else r.guard((*path, "name"), lambda: rules.check_name(text), {"name": ()})
    priority = r.integer(m["priority"], (*path, "priority"))
    action = r.choice(rules.Action, m["action"], (*path, "action"))
    sources = peers(r, m["from"], (*path, "from"), known)
    destinations = peers(r, m["to"], (*path, "to"), known)
    svcs = service_refs(r, m["services"], (*path, "services"), known)
    window = time_window(r, m, path)
    rule_owner = r.text(m["owner"], (*path, "owner")) if "owner" in m else owner
    reason = r.text(m["reason"], (*path, "reason")) if "reason" in m else ""
    enabled = r.boolean(m.get("enabled", True), (*path, "enabled"))
    if (
        name is None
        or priority is None
        or action is None
        or sources is None
        or destinations is None
        or svcs is None
        or window is None
        or rule_owner is None
        or reason is None
        or enabled is None
        or tier is None
    ):
        return None
    build = functools.partial(
        rules.Rule,
        name,
        tier,
        priority,
        action,
        sources,
        destinations,
        svcs,
        *window,
        rule_owner,
        reason,
        policy,
        enabled,
    )
    return r.guard(path, build)


def time_window(
    r: Reader, m: dict[str, Any], path: nodes.Path
) -> tuple[datetime | None, datetime | None] | None:
    """(notBefore, notAfter), either absent (None); None when one is wrong."""
    start = r.moment(m["notBefore"], (*path, "notBefore")) if "notBefore" in m else None
    end = r.moment(m["notAfter"], (*path, "notAfter")) if "notAfter" in m else None
    if ("notBefore" in m and start is None) or ("notAfter" in m and end is None):
        return None
    return start, end


def peers(r: Reader, value: Any, path: nodes.Path, known: Known) -> tuple[selectors.Peer, ...] | None:
    """`any`, or a list of `{selector}`, `{ipList}`, `{cidr, except}`, `{any: true}` and `any`."""
    if value == "any":
        return (selectors.AnyPeer(),)
    items = r.items(value, path)
    if isinstance(value, list) and not items:
        r.error(path, "needs at least one peer (write `any` for everything)")
    found = [peer(r, item, item_path, known) for item_path, item in items]
    return None if not found or None in found else tuple(p for p in found if p is not None)


def peer(r: Reader, item: Any, path: nodes.Path, known: Known) -> selectors.Peer | None:
    """One peer."""
    if item == "any":
        return selectors.AnyPeer()
    m = r.mapping(item, path, (*PEER_KINDS, "except"))
    if m is None:
        return None
    given = [k for k in PEER_KINDS if k in m]
    if len(given) != 1:
        r.error(path, f"a peer is exactly one of {', '.join(PEER_KINDS)} (got {', '.join(given) or 'none'})")
        return None
    if "except" in m and given != ["cidr"]:
        r.error((*path, "except"), "except goes with cidr only")
        return None
    kind = given[0]
    if kind == "any":
        return selectors.AnyPeer() if r.boolean(m["any"], (*path, "any")) else None
    if kind == "selector":
        sel = selector(r, m["selector"], (*path, "selector"))
        return None if sel is None else selectors.SelectorPeer(sel)
    if kind == "ipList":
        return ip_list_peer(r, m["ipList"], (*path, "ipList"), known)
    cidrs = kinds.networks(r, m["cidr"], (*path, "cidr"))
    cuts = kinds.networks(r, m["except"], (*path, "except")) if "except" in m else ()
    if cidrs is None or cuts is None:
        return None
    return r.guard(path, lambda: selectors.CidrPeer(cidrs, cuts), {"": ("except",)})


def ip_list_peer(r: Reader, value: Any, path: nodes.Path, known: Known) -> selectors.Peer | None:
    """`{ipList: name}`: the name must be a declared IP list."""
    name = r.text(value, path)
    if name is not None and name not in known.ip_lists:
        r.error(path, f"unknown ip list '{name}'{suggest(name, known.ip_lists)}")
        return None
    return None if name is None else selectors.IpListPeer(name)


def selector(r: Reader, value: Any, path: nodes.Path) -> selectors.LabelSelector | None:
    """kubectl text (`env=prod,role in (web,app)`) or matchLabels / matchExpressions."""
    if isinstance(value, str):
        return r.guard(path, lambda: selectors.LabelSelector.parse(value))
    m = r.mapping(value, path, ("matchLabels", "matchExpressions"))
    if m is None:
        return None
    match = r.labels(m.get("matchLabels", {}), (*path, "matchLabels"))
    items = r.items(m.get("matchExpressions", []), (*path, "matchExpressions"))
    exprs = [requirement(r, e, p) for p, e in items]
    if match is None or None in exprs:
        return None
    return selectors.LabelSelector.of(match, tuple(e for e in exprs if e is not None))


def requirement(r: Reader, item: Any, path: nodes.Path) -> selectors.Requirement | None:
    """One matchExpressions entry `{key, operator, values}`."""
    m = r.mapping(item, path, ("key", "operator", "values"), ("key", "operator"))
    if m is None or "key" not in m or "operator" not in m:
        return None
    key = r.text(m["key"], (*path, "key"))
    if key is not None and r.guard((*path, "key"), lambda: labels.check_key(key)) is None:
        return None
    operator = r.choice(selectors.Operator, m["operator"], (*path, "operator"))
    values = r.texts(m["values"], (*path, "values")) if "values" in m else []
    if key is None or operator is None or values is None:
        return None
    build = functools.partial(selectors.Requirement, key, operator, tuple(values))
    return r.guard(path, build, {"values": ("values",), "": ("values",)})


def service_refs(
    r: Reader, value: Any, path: nodes.Path, known: Known
) -> tuple[services.Service, ...] | None:
    """`any`, or a list of Service names, inline port specs and `any`."""
    if value == "any":
        return (services.ANY_SERVICE,)
    items = r.items(value, path)
    if isinstance(value, list) and not items:
        r.error(path, "needs at least one service (write `any` for every port)")
    found = [service_ref(r, item, item_path, known) for item_path, item in items]
    return None if not found or None in found else tuple(s for s in found if s is not None)


def service_ref(r: Reader, item: Any, path: nodes.Path, known: Known) -> services.Service | None:
    """One entry of `services`."""
    if item == "any":
        return services.ANY_SERVICE
    if isinstance(item, dict):
        spec = kinds.port_spec(r, item, path)
        return None if spec is None else canonical.inline_service(spec)
    name = r.text(item, path)
    if name is not None and name not in known.services:
        r.error(path, f"unknown service '{name}'{suggest(name, known.services)}")
        return None
    return None if name is None else known.services[name]

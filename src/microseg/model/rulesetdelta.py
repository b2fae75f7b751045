"""Ruleset deltas: what changed between two documents of one workload, and applying that change.

Fed by the feed (`Differ.delta` when the document an agent says it holds is still remembered);
feeds the agent (`apply` to the JSON of the document it holds, then `RulesetDocument.from_dict`,
whose hash check proves the result is exactly the new document; on any mismatch the agent asks
for the whole document). A delta carries:

- `base` and `hash`: the document it applies to and the one it produces;
- `changed`: the top-level members (`workload`, `policyVersion`, `tiers`, `controlPlane`) whose
  value changed, each whole;
- `addressSets`: per changed set, `null` (gone), `{"description", "networks"}` (new, or replaced
  whole when that is shorter) or `{"add": [...], "remove": [...]}` (member changes);
- `ingress` / `egress` when the list changed: `{"keep": [prefix, suffix], "entries": [...]}`, the
  new list being the old one's first `prefix` entries, then `entries`, then its last `suffix`.

A one-rule change that every document holds costs each agent one entry, not its whole document;
a relabel costs each agent the few addresses that moved.

Does not: decide when a delta is worth sending (the feed), or touch the kernel (the agent).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from microseg.errors import ValidationError
from microseg.model import addresses as ip
from microseg.model import ruleset

SCHEMA = "microseg.io/ruleset-delta/v1"
MEDIA_TYPE = "application/vnd.microseg.ruleset-delta+json"
"""The content type of a delta; an agent that sends it in `Accept` may be answered with one."""
Json = dict[str, Any]


class Differ:
    """Builds deltas as canonical JSON text; the parts many documents share (an identity's entry
    list, an address set) are compared once per pair, however many documents carry them."""

    def __init__(self, limit: int = 50_000) -> None:
        self.limit = limit
        self._sets: dict[tuple[str, str], str | None] = {}
        self._lists: dict[tuple[int, int], tuple[object, object, str | None]] = {}

    def delta(self, old: ruleset.RulesetDocument, new: ruleset.RulesetDocument) -> str:
        """The delta from `old` to `new` (both with their hash), as canonical JSON."""
        if len(self._sets) + len(self._lists) > self.limit:
            self._sets.clear()
            self._lists.clear()
        members = {
            "schema": json.dumps(SCHEMA),
            "base": json.dumps(old.hash),
            "hash": json.dumps(new.hash),
            "changed": _changed_header(old, new),
            "addressSets": self._sets_delta(old, new),
        }
        for key, a, b in (("ingress", old.ingress, new.ingress), ("egress", old.egress, new.egress)):
            script = self._list_delta(a, b)
            if script is not None:
                members[key] = script
        return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in sorted(members.items())) + "}"

    def _sets_delta(self, old: ruleset.RulesetDocument, new: ruleset.RulesetDocument) -> str:
        before = {s.name: s for s in old.address_sets}
        parts: list[tuple[str, str]] = []
        for s in new.address_sets:
            was = before.pop(s.name, None)
            if was is s:  # sets are shared across documents and builds: unchanged at a glance
                continue
            if was is None:
                parts.append((s.name, s.fragments[0]))
                continue
            change = self._set_change(was, s)
            if change is not None:
                parts.append((s.name, json.dumps(s.name) + ":" + change))
        parts.extend((name, json.dumps(name) + ":null") for name in before)
        return "{" + ",".join(text for _, text in sorted(parts)) + "}"

    def _set_change(self, was: ruleset.AddressSet, now: ruleset.AddressSet) -> str | None:
        """None when equal; else the shorter of the member change and the whole set."""
        key = (was.digest + was.description, now.digest + now.description)
        if key not in self._sets:
            self._sets[key] = _set_change(was, now)
        return self._sets[key]

    def _list_delta(self, a: tuple[ruleset.Entry, ...], b: tuple[ruleset.Entry, ...]) -> str | None:
        if a is b:
            return None
        key = (id(a), id(b))
        found = self._lists.get(key)
        if found is None or found[0] is not a or found[1] is not b:  # an id can be reused after a's death
            found = self._lists[key] = (a, b, _list_script(a, b))
        return found[2]


def _changed_header(old: ruleset.RulesetDocument, new: ruleset.RulesetDocument) -> str:
    keys = tuple(k for k in ruleset.HEADER if ruleset.header_value(old, k) != ruleset.header_value(new, k))
    changed = ruleset.header_members(new, keys)
    return "{" + ",".join(f"{json.dumps(k)}:{changed[k]}" for k in keys) + "}"


def _set_change(was: ruleset.AddressSet, now: ruleset.AddressSet) -> str | None:
    if was.digest == now.digest and was.description == now.description:
        return None
    whole = now.fragments[0].split(":", 1)[1]
    if was.description != now.description:
        return whole
    old, new = set(was.networks), set(now.networks)
    change = _canonical({"add": _ordered(new - old), "remove": _ordered(old - new)})
    return change if len(change) < len(whole) else whole


def _ordered(nets: set[ip.Network]) -> list[str]:
    """Members in the order documents keep them (IPv4 first, each by address)."""
    return [str(n) for n in sorted(nets, key=_order)]


def _order(net: ip.Network) -> tuple[int, int, int]:
    return net.version, int(net.network_address), net.prefixlen


def _list_script(a: Sequence[ruleset.Entry], b: Sequence[ruleset.Entry]) -> str | None:
    """`{"keep": [prefix, suffix], "entries": [...]}` or None when the lists are equal."""
    if len(a) == len(b) and all(x is y or x == y for x, y in zip(a, b, strict=True)):
        return None
    prefix = 0
    while prefix < min(len(a), len(b)) and a[prefix] == b[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(a), len(b)) - prefix and a[-1 - suffix] == b[-1 - suffix]:
        suffix += 1
    middle = b[prefix : len(b) - suffix]
    entries = "[" + ",".join(e.text for e in middle) + "]"
    return '{"entries":' + entries + ',"keep":[' + f"{prefix},{suffix}" + "]}"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# -- the agent's side ----------------------------------------------------------------------------


def apply(base: Json, delta: Json) -> Json:
    """The document `delta` makes of `base` (both JSON forms); ValidationError when it does not
    fit `base`. The caller still checks the result's hash (`RulesetDocument.from_dict`)."""
    try:
        return _apply(base, delta)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        if isinstance(exc, ValidationError):
            raise
        raise ValidationError(f"malformed ruleset delta: {exc!r}") from exc


def _apply(base: Json, delta: Json) -> Json:
    if delta.get("schema") != SCHEMA:
        raise ValidationError(f"unknown ruleset delta schema {delta.get('schema')!r}, expected {SCHEMA}")
    if delta["base"] != base.get("hash"):
        raise ValidationError(f"the delta applies to {delta['base']}, not to {base.get('hash')}")
    out = {k: v for k, v in base.items() if k != "hash"}
    for key, value in delta["changed"].items():
        if key not in ruleset.HEADER:
            raise ValidationError(f"a ruleset delta cannot change {key!r}")
        out[key] = value
    out["addressSets"] = _apply_sets(base["addressSets"], delta["addressSets"])
    for key in ("ingress", "egress"):
        if key in delta:
            out[key] = _apply_script(base[key], delta[key])
    out["hash"] = delta["hash"]
    return out


def _apply_sets(sets: Json, changes: Json) -> Json:
    out = dict(sets)
    for name, change in changes.items():
        if change is None:
            del out[name]
        elif "networks" in change:
            out[name] = {"description": change["description"], "networks": list(change["networks"])}
        else:
            out[name] = {"description": sets[name]["description"], "networks": _members(sets[name], change)}
    return out


def _members(old: Json, change: Json) -> list[str]:
    nets = {ip.network(n) for n in old["networks"]}
    removed = {ip.network(n) for n in change["remove"]}
    if not removed <= nets:
        raise ValidationError("the delta removes addresses the set does not hold")
    return _ordered((nets - removed) | {ip.network(n) for n in change["add"]})


def _apply_script(entries: list[Json], script: Json) -> list[Json]:
    prefix, suffix = (int(n) for n in script["keep"])
    if prefix < 0 or suffix < 0 or prefix + suffix > len(entries):
        raise ValidationError(f"the delta keeps {prefix} + {suffix} of {len(entries)} entries")
    return [*entries[:prefix], *script["entries"], *entries[len(entries) - suffix :]]

"""Apply sets and field ownership: what `POST /apply` writes when files meet what is stored.

Fed by `service.apply` (documents already checked for kind and name, inside its transaction);
feeds it back a `Plan`: the documents to write, the objects to prune, the memberships to record.
Like kubectl's applyset and server-side apply:

- **Sets.** Every apply names a set (`applySet`; the CLI derives one from the paths unless
  `--set NAME`). The objects an apply writes or finds unchanged become that set's (taken over
  from another set, reported as `adopted`). `prune` deletes the set's objects the documents no
  longer hold, of any kind the set ever held, and nothing else: not another set's objects, not one
  made through the API or the console (`store/applysets.py` forgets a membership when its object
  is deleted or created outside an apply).
- **Fields (workloads).** A file owns what it declares: label keys, attribute keys, spec keys
  (`mode`, ...), addresses. The stored workload keeps what the file does not declare (labels set
  through the API or by an enrollment token, a quarantine, a mode set with `PUT .../mode`). A
  label, attribute or spec key the same set declared on its previous apply and no longer declares
  is removed. Agents own their inventory: an attribute whose source is `agent` or `enrollment` is
  never overwritten or re-sourced by a file (the difference is reported as a conflict: an export
  committed to git cannot launder an agent's word into an operator's), and while a live agent
  reports for the workload its `kind` is the agent's and the addresses it holds stay (the file's
  are added; those the set declared before and dropped are removed).
- Every other kind is owned whole by the file that declares it (replaced as before).

Does not: validate (service.validate judges the result), write, or check roles.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from microseg.server import exceptions
from microseg.store import agents, objects
from microseg.store import applysets as members

Doc = dict[str, Any]
Key = tuple[str, str]
AGENT_SOURCES = frozenset({"agent", "enrollment"})
"""Attribute sources that mean an agent said it (`model.workloads.Provenance`)."""
MERGED_SPEC = frozenset({"attributes", "attributeSources", "addresses"})
"""Workload spec keys merged item by item; every other spec key is owned whole by who declares it."""


@dataclass(frozen=True)
class Conflict:
    """A declared field the server did not take, and why."""

    object: str
    field: str
    message: str

    def to_json(self) -> dict[str, str]:
        """As the API answers it."""
        return {"object": self.object, "field": self.field, "message": self.message}


@dataclass
class Plan:
    """What one apply does: write `changes` (None deletes), record `members`."""

    olds: dict[Key, objects.Stored | None]
    changes: dict[Key, Doc | None] = field(default_factory=dict)
    members: list[members.Member] = field(default_factory=list)
    pruned: list[Key] = field(default_factory=list)
    adopted: dict[Key, str] = field(default_factory=dict)
    """Objects that join this set from another one (-> its name)."""
    conflicts: list[Conflict] = field(default_factory=list)


def plan(conn: sa.Connection, apply_set: str | None, wanted: Mapping[Key, Doc], *, prune: bool) -> Plan:
    """The changes an apply of `wanted` as `apply_set` (None: no set) makes. Cost: one read per
    wanted object, one of their memberships, one agent lookup per stored workload; with `prune`,
    one read per member of the set."""
    found = Plan({key: objects.get(conn, *key) for key in wanted})
    before = members.of_objects(conn, wanted)
    for key, doc in wanted.items():
        old = found.olds[key]
        prior = before.get(key) if old is not None else None  # a gone object's membership is stale
        mine = prior.fields if prior is not None and prior.apply_set == apply_set else None
        new = _new_document(conn, key, old, doc, mine=mine, out=found.conflicts)
        if old is None or old.doc != new:
            found.changes[key] = new
        if apply_set is None:
            continue
        if prior is not None and prior.apply_set != apply_set:
            found.adopted[key] = prior.apply_set
        member = members.Member(*key, apply_set, declared(doc) if key[0] == "Workload" else {})
        if member != prior:  # an unchanged membership is not rewritten
            found.members.append(member)
    if prune and apply_set is not None:
        _prune(conn, apply_set, wanted, found)
    return found


def _new_document(
    conn: sa.Connection,
    key: Key,
    old: objects.Stored | None,
    doc: Doc,
    *,
    mine: Mapping[str, Any] | None,
    out: list[Conflict],
) -> Doc:
    """What the apply writes for one object: the file's document, merged into a stored workload."""
    new = exceptions.unapproved(old, doc)
    if key[0] == "Workload" and old is not None:
        return _merged(conn, key, (old.doc, new), mine=mine, out=out)
    return new


def _prune(conn: sa.Connection, apply_set: str, wanted: Mapping[Key, Doc], found: Plan) -> None:
    """Deletions for the set's members that `wanted` no longer holds (gone ones are skipped)."""
    for member in members.of_set(conn, apply_set):
        if member.key in wanted:
            continue
        old = objects.get(conn, *member.key)
        if old is not None:
            found.olds[member.key] = old
            found.changes[member.key] = None
            found.pruned.append(member.key)


def declared(doc: Doc) -> dict[str, Any]:
    """The fields a workload document declares, as a set's membership records them."""
    if not _shaped(doc):
        return {}
    spec = doc["spec"]
    return {
        "labels": sorted(_labels(doc)),
        "attributes": sorted(spec.get("attributes") or {}),
        "addresses": sorted({str(n) for n in _networks(spec.get("addresses") or [])}),
        "spec": sorted(k for k in spec if k not in MERGED_SPEC),
    }


# --- merging one workload -----------------------------------------------------------------------


def _merged(
    conn: sa.Connection,
    key: Key,
    docs: tuple[Doc, Doc],
    *,
    mine: Mapping[str, Any] | None,
    out: list[Conflict],
) -> Doc:
    """The stored workload `old` with the file's `new` applied: the file's declarations win except
    over what an agent reported; what this set (`mine`) declared before and dropped goes."""
    old, new = docs
    if not (_shaped(old) and _shaped(new)):
        return new  # validation refuses it and names the field
    prior = mine or {}
    agent = _has_live_agent(conn, key[1])
    ospec, nspec = old["spec"], new["spec"]
    spec = {k: v for k, v in ospec.items() if k not in prior.get("spec", ()) or k in nspec}
    spec.update({k: v for k, v in nspec.items() if k not in MERGED_SPEC})
    if agent and "kind" in ospec:
        spec["kind"] = ospec["kind"]
    addresses = _merged_addresses(ospec, nspec, prior.get("addresses", ()), agent=agent)
    attrs, sources = _merged_attributes(ospec, nspec, prior.get("attributes", ()), f"{key[0]}/{key[1]}", out)
    spec = {k: v for k, v in spec.items() if k not in MERGED_SPEC}
    spec |= {"addresses": addresses}
    spec |= {k: v for k, v in (("attributes", attrs), ("attributeSources", sources)) if v}
    labels = _merged_map(_labels(old), _labels(new), prior.get("labels", ()))
    metadata = {k: v for k, v in new["metadata"].items() if k != "labels"}
    return {**new, "metadata": metadata | ({"labels": labels} if labels else {}), "spec": spec}


def _merged_map(
    old: Mapping[str, Any], new: Mapping[str, Any], dropped_if_gone: Iterable[str]
) -> dict[str, Any]:
    """`new` over `old`, without the keys the set declared before and `new` lacks."""
    gone = set(dropped_if_gone) - set(new)
    return {**{k: v for k, v in old.items() if k not in gone}, **new}


def _merged_attributes(
    ospec: Doc, nspec: Doc, prior: Iterable[str], ref: str, out: list[Conflict]
) -> tuple[dict[str, str], dict[str, str]]:
    """(attributes, sources): the file's values with its sources (none: operator), except for an
    attribute an agent reported, which stays the agent's."""
    attrs, sources = dict(ospec.get("attributes") or {}), dict(ospec.get("attributeSources") or {})
    agents_own = {k for k in attrs if sources.get(k) in AGENT_SOURCES}
    declared_now, their_sources = (
        dict(nspec.get("attributes") or {}),
        dict(nspec.get("attributeSources") or {}),
    )
    for key in set(prior) - set(declared_now) - agents_own:
        attrs.pop(key, None)
        sources.pop(key, None)
    for key, value in declared_now.items():
        if key in agents_own:
            if attrs[key] != value:
                why = (
                    f"the agent reports {attrs[key]!r} ({sources[key]}); the file's {value!r} is not "
                    "taken: agents own what they report"
                )
                out.append(Conflict(ref, f"spec.attributes.{key}", why))
            continue
        attrs[key] = value
        if key in their_sources:
            sources[key] = their_sources[key]
        else:
            sources.pop(key, None)
    return attrs, sources


def _merged_addresses(ospec: Doc, nspec: Doc, prior: Iterable[str], *, agent: bool) -> list[Any]:
    """Without a live agent the file's addresses; with one, the agent's too, less those the set
    declared before and dropped. The stored list stays as it is (its order too) when its
    addresses do not change, so that an apply and a heartbeat do not rewrite each other."""
    old, new = list(ospec.get("addresses") or []), list(nspec.get("addresses") or [])
    if not agent:
        return new
    dropped = _networks(prior) - _networks(new)
    keep = [a for a in old if _network(a) not in dropped]
    if _networks(keep) | _networks(new) == _networks(old):
        return old
    chosen: dict[Any, str] = {}
    for text in [*new, *keep]:
        chosen.setdefault(_network(text), text)
    return [chosen[n] for n in sorted(chosen, key=lambda n: (n.version, int(n.network_address), n.prefixlen))]


# --- helpers ------------------------------------------------------------------------------------


def _has_live_agent(conn: sa.Connection, workload: str) -> bool:
    row = agents.by_workload(conn, workload)
    return row is not None and row["revoked_at"] is None


def _shaped(doc: Doc) -> bool:
    """Whether a workload document has the shape merging needs (anything else goes to validation
    as it is, which refuses it naming the field)."""
    meta, spec = doc.get("metadata"), doc.get("spec")
    if not isinstance(meta, dict) or not isinstance(spec, dict):
        return False
    maps = (meta.get("labels"), spec.get("attributes"), spec.get("attributeSources"))
    if not all(
        m is None or (isinstance(m, dict) and all(isinstance(v, str) for v in m.values())) for m in maps
    ):
        return False
    found = spec.get("addresses")
    return isinstance(found, list) and all(isinstance(a, str) and _network(a) is not None for a in found)


def _labels(doc: Doc) -> dict[str, str]:
    return dict(doc["metadata"].get("labels") or {})


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _networks(texts: Iterable[str]) -> set[Any]:
    return {n for n in map(_network, texts) if n is not None}

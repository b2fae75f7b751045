"""Enrollment and inventory: what an agent may say about its own identity, labels and addresses.

Fed by the agent routes (`routes_agent.enroll`, `routes_agent.heartbeat`); feeds the store (the
workload, the agent row, the audit log and events). The agent is not trusted with anything an
admin did not grant it:

- **Identity.** Enrollment creates a workload with exactly the token's labels and mode. It adopts
  an existing workload only when the token names it (`enrollment_tokens.workloads`, an admin's
  binding made beforehand), and never an `unmanaged` one. A hostname naming a workload that exists
  (also after normalisation: case, a trailing dot, characters rewritten) without that binding is
  refused, audited and raises `enroll-refused`; a bound adoption raises `enroll-adopted`. A bound
  workload keeps the labels and mode an operator gave it; the token's labels fill the keys it lacks
  and its mode an unset one (a policy file that says no mode means visibility until then).
- **Attributes** (hostname, os, kernel) carry their source in `spec.attributeSources`: `enrollment`
  for what an agent reported when it enrolled onto a workload an admin bound to its token, `agent`
  for anything else it reports (an unbound enrollment, and every value a heartbeat changes). Which
  sources a label rule believes is the label rule's business (`LabelRule.trust`), not this module's.
- **Addresses.** A new address is kept only inside the token's `address_ranges` (empty: any) and
  when no other workload holds it; a refused one is dropped (the rest of the report is accepted)
  with one `address-refused` event per change of the report. An address the workload already has
  stays. A change of the workload's effective labels (after label rules) raises `labels-changed`.

Does not: authenticate (auth.py), rate-limit (the route) or decide what label rules match
(model/labelrules.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from microseg import errors
from microseg.model import addresses, labelrules, workloads
from microseg.server import inventory, kinds, models, service
from microseg.server.auth import Principal
from microseg.server.problems import Problem
from microseg.server.runtime import Runtime
from microseg.store import agents, audit, events, objects, state, tokens

Doc = dict[str, Any]
AGENT = "agent"
ENROLLMENT = "enrollment"
"""Sources of an attribute (`spec.attributeSources`); a missing key means `operator`."""


@dataclass(frozen=True)
class Enrolled:
    """What a new agent is told: its id, its credential (shown once) and its workload."""

    agent_id: str
    credential: str
    workload: str


@dataclass(frozen=True)
class Claims:
    """The addresses an agent reported, judged: those its workload holds now, and those refused."""

    kept: list[str]
    refused: dict[str, str] = field(default_factory=dict)
    """address -> why it was refused."""


class Refused(Exception):  # noqa: N818 - an outcome, recorded after the enrollment's rollback
    """An enrollment the server refuses; audited and raised as an event in a transaction of its own,
    since the enrollment's transaction (and its use of the token) is rolled back."""

    def __init__(self, status: int, detail: str, token: str, workload: str, reason: str) -> None:
        super().__init__(detail)
        self.status, self.detail, self.reason = status, detail, reason
        self.token, self.workload = token, workload


def workload_name(hostname: str) -> str:
    """The workload name a hostname makes (characters a name cannot hold become `-`)."""
    name = re.sub(r"[^A-Za-z0-9_.:-]+", "-", hostname).strip("-_.:")[:253]
    if not kinds.NAME.fullmatch(name):
        raise errors.ValidationError(
            f"hostname {hostname!r} does not make a workload name", "inventory.hostname"
        )
    return name


def _reported_attributes(inv: models.Inventory) -> dict[str, str]:
    """The attributes an inventory reports."""
    found = {"hostname": inv.hostname, "os": inv.os}
    if inv.kernel:
        found["kernel"] = inv.kernel
    return found


# --- enrollment ---------------------------------------------------------------------------------


def enroll(rt: Runtime, body: models.EnrollRequest) -> Enrolled:
    """Enroll an agent (create or adopt its workload) or refuse with a Problem; a refusal is audited.

    Cost: indexed reads only (the name in any case, each reported address's holder), the same at
    10 and at 10,000 workloads; no stored workload but the one adopted is read. One statement each
    for the token, the lock, the name, the agent's slot, each address's holder, the workload with
    its index rows (three on SQLite), the audit record and the state row; events add theirs. All
    but the token's run under the `address-claims` lock, which every enrollment waits for: on
    PostgreSQL its round trips, not the work, bound the rate, so none is spent that can be saved."""
    name = workload_name(body.inventory.hostname)
    try:
        with rt.db.write() as conn:
            enrolled = _enroll(rt, conn, body, name)
    except Refused as refused:
        with rt.db.write() as conn:
            _record_refusal(conn, refused)
        raise Problem(refused.status, "Enrollment refused", refused.detail) from None
    rt.poke()
    return enrolled


def _enroll(rt: Runtime, conn: sa.Connection, body: models.EnrollRequest, name: str) -> Enrolled:
    token = tokens.consume_enrollment(conn, body.token)
    if token is None:
        raise Problem(401, "Unauthorized", "unknown, revoked, expired or used enrollment token")
    rt.db.lock(conn, "address-claims")
    old = _adoptable(rt, conn, token, name, body.inventory.hostname)
    name = old.name if old else name
    ident, credential = _agent(rt, conn, name, body.inventory, token["id"])
    claims = _judge(
        name,
        body.inventory.addresses,
        token=token,
        old=old.doc if old else None,
        owners=inventory.StoredOwners(conn),
    )
    if not claims.kept:
        reasons = "; ".join(f"{a}: {why}" for a, why in claims.refused.items())
        raise Refused(422, f"no reported address may be claimed ({reasons})", token["id"], name, reasons)
    doc = _enrolled_doc(name, body.inventory, token, claims.kept, old.doc if old else None)
    _validate(rt, doc)
    actor = f"enrollment:{token['id']}"
    if old is None:  # none in any case, looked up under the lock: no UPDATE to try first
        objects.create(conn, "Workload", name, doc, actor)
    else:
        objects.put(conn, "Workload", name, doc, actor)
    _record_enrollment(conn, actor, ident, old.doc if old else None, doc)
    events.add_many(conn, _address_events(name, ident, claims.refused))
    state.bump_inventory(conn)
    return Enrolled(ident, credential, name)


def _adoptable(
    rt: Runtime, conn: sa.Connection, token: dict[str, Any], name: str, hostname: str
) -> objects.Stored | None:
    """The existing workload this enrollment adopts (None: it creates one); Refused when the
    hostname names one the token is not bound to, or an unmanaged one. The name is looked up as
    it is, else in any case (`objects.named_in_any_case`: itself, else the first by name)."""
    target = objects.named_in_any_case(conn, "Workload", name)
    if target is None:
        return None
    if target not in (token.get("workloads") or []):
        how = "" if target == hostname else f" (hostname {hostname!r} normalised)"
        detail = (
            f"workload {target} already exists{how} and this enrollment token is not bound to it; "
            "an admin binds a token to the workloads it may adopt (`workloads`)"
        )
        raise Refused(409, detail, token["id"], target, "not bound")
    found = objects.get(conn, "Workload", target)
    assert found is not None  # just looked up, in this transaction
    if rt.workloads.model(found.doc, found.etag).kind is workloads.WorkloadKind.UNMANAGED:
        detail = f"workload {target} is unmanaged (no agent runs there); an agent cannot adopt it"
        raise Refused(409, detail, token["id"], target, "unmanaged")
    return found


def _agent(rt: Runtime, conn: sa.Connection, name: str, inv: models.Inventory, token: str) -> tuple[str, str]:
    """The new agent's (id, credential). One agent per workload: a live one refuses the
    enrollment, a revoked one makes room (both rare: the first INSERT usually finds none)."""
    made = agents.create_unless_taken(rt.db, conn, name, inv.model_dump(), enrollment_token=token)
    if made is not None:
        return made
    existing = agents.by_workload(conn, name)
    if existing is not None and existing["revoked_at"] is None:
        detail = f"workload {name} already has an agent; revoke it first"
        raise Refused(409, detail, token, name, "has an agent")
    if existing is not None:
        conn.execute(agents.T.delete().where(agents.T.c.id == existing["id"]))
    return agents.create(conn, name, inv.model_dump(), enrollment_token=token)


def _enrolled_doc(
    name: str, inv: models.Inventory, token: dict[str, Any], kept: list[str], old: Doc | None
) -> Doc:
    """A new workload gets exactly the token's labels and mode; a bound one keeps what an
    operator set, the token filling in what is missing."""
    old_spec: dict[str, Any] = dict((old or {}).get("spec") or {})
    attrs, sources = _merge_attributes(
        old_spec, _reported_attributes(inv), AGENT if old is None else ENROLLMENT, force=True
    )
    labels = {**token["labels"], **_labels(old)} if old else dict(token["labels"])
    spec = {
        **old_spec,
        "kind": inv.kind,
        "addresses": sorted(kept),
        "attributes": attrs,
        "attributeSources": sources,
    }
    spec.setdefault("mode", token["mode"])
    return _document(name, labels, spec, old)


def _record_enrollment(conn: sa.Connection, actor: str, ident: str, before: Doc | None, after: Doc) -> None:
    name = after["metadata"]["name"]
    action = "enroll" if before is None else "enroll-adopted"
    audit.record(conn, actor, action, f"Workload/{name}", {"agent": ident, "before": before, "after": after})
    if before is not None:
        message = f"{name}: adopted by agent {ident} ({actor}), as an admin bound it"
        events.add(conn, "enroll-adopted", name, message, {"agent": ident, "token": actor.split(":", 1)[1]})


def _record_refusal(conn: sa.Connection, refused: Refused) -> None:
    actor = f"enrollment:{refused.token}"
    details = {"reason": refused.reason, "detail": refused.detail, "token": refused.token}
    audit.record(conn, actor, "enroll-refused", f"Workload/{refused.workload}", details)
    events.add(conn, "enroll-refused", refused.workload, f"{refused.workload}: {refused.detail}", details)


# --- heartbeat ----------------------------------------------------------------------------------


def heartbeat(rt: Runtime, who: Principal, inv: models.Inventory) -> bool:
    """Take an agent's inventory into its workload; whether the workload changed.

    Cost: one read of the workload, indexed reads of the holders of addresses it does not hold yet,
    and the label rules only when the workload changed; never every workload."""
    with rt.db.write() as conn:
        old = objects.get(conn, "Workload", who.workload)
        if old is None:
            raise Problem(404, "Not found", f"workload {who.workload} was deleted; enroll again")
        row = agents.by_workload(conn, who.workload) or {}
        claims = _heartbeat_claims(rt, conn, row, old, inv.addresses)
        doc = _reported_doc(who.workload, inv, claims.kept, old.doc)
        if doc != old.doc:
            _save_inventory(rt, conn, who, old, doc)
        said_before = set((row.get("inventory") or {}).get("addresses") or [])
        fresh = {a: why for a, why in claims.refused.items() if a not in said_before}
        events.add_many(conn, _address_events(who.workload, who.id, fresh))
        agents.seen(conn, who.id, inventory=inv.model_dump())
    rt.poke()
    return doc != old.doc


def _heartbeat_claims(
    rt: Runtime, conn: sa.Connection, row: dict[str, Any], old: objects.Stored, reported: list[str]
) -> Claims:
    """The reported addresses judged; when every one is refused the workload keeps what it has."""
    held = list(_spec(old.doc).get("addresses") or [])
    if {_parse(a) for a in reported} <= {_parse(a) for a in held}:
        return Claims(list(dict.fromkeys(reported)))
    rt.db.lock(conn, "address-claims")
    token = tokens.enrollment_by_id(conn, row["enrollment_token"]) if row.get("enrollment_token") else None
    owners = inventory.StoredOwners(conn)
    claims = _judge(old.name, reported, token=token or {}, old=old.doc, owners=owners)
    return claims if claims.kept else Claims(sorted(held), claims.refused)


def _reported_doc(name: str, inv: models.Inventory, kept: list[str], old: Doc) -> Doc:
    """The workload after a heartbeat; labels and mode someone set stay as they are."""
    spec = dict(_spec(old))
    attrs, sources = _merge_attributes(spec, _reported_attributes(inv), AGENT, force=False)
    spec.update(
        {"kind": inv.kind, "addresses": sorted(kept), "attributes": attrs, "attributeSources": sources}
    )
    return _document(name, _labels(old), spec, old)


def _save_inventory(rt: Runtime, conn: sa.Connection, who: Principal, old: objects.Stored, doc: Doc) -> None:
    _validate(rt, doc)
    objects.put(conn, "Workload", who.workload, doc, who.actor)
    audit.record(conn, who.actor, "inventory", f"Workload/{who.workload}", {"before": old.doc, "after": doc})
    _labels_event(rt, conn, who.workload, old, doc)
    state.bump_inventory(conn)


def _labels_event(rt: Runtime, conn: sa.Connection, name: str, old: objects.Stored, doc: Doc) -> None:
    """`labels-changed` when the inventory changed what label rules give the workload."""
    rules = service.label_rules(conn)
    before = dict(labelrules.effective_labels(rt.workloads.model(old.doc, old.etag), rules))
    after = dict(labelrules.effective_labels(rt.workloads.model(doc), rules))
    if before != after:
        message = f"{name}: effective labels changed by its agent's inventory"
        events.add(conn, "labels-changed", name, message, {"before": before, "after": after})


# --- shared -------------------------------------------------------------------------------------


def _merge_attributes(
    spec: Mapping[str, Any], reported: Mapping[str, str], source: str, *, force: bool
) -> tuple[dict[str, str], dict[str, str]]:
    """(attributes, their sources) after a report: a reported value that is new or differs takes
    `source`; one repeated unchanged keeps its source unless `force`."""
    attrs = dict(spec.get("attributes") or {})
    sources = dict(spec.get("attributeSources") or {})
    for key, value in reported.items():
        if force or attrs.get(key) != value:
            attrs[key], sources[key] = value, source
    return attrs, sources


def _validate(rt: Runtime, doc: Doc) -> None:
    """InvalidError unless the workload document is valid: what `service.validate` checks for one
    workload, except ownership, which `_judge` settled for each address in this transaction (under
    the `address-claims` lock), so every stored workload need not be read again."""
    rt.workloads.model(doc)


def _judge(
    name: str,
    reported: Iterable[str],
    *,
    token: Mapping[str, Any],
    old: Doc | None,
    owners: inventory.StoredOwners,
) -> Claims:
    """Which reported addresses the workload may hold: those it holds already, and new ones inside
    the token's ranges that no other workload holds."""
    held = {_parse(a) for a in _spec(old).get("addresses") or []}
    ranges = [addresses.network(r) for r in token.get("address_ranges") or []]
    kept, refused = [], {}
    for text in dict.fromkeys(reported):
        why = None if _parse(text) in held else _refusal(_parse(text), ranges, owners, name)
        if why is None:
            kept.append(text)
        else:
            refused[text] = why
    return Claims(kept, refused)


def _refusal(
    net: addresses.Network, ranges: list[addresses.Network], owners: inventory.StoredOwners, me: str
) -> str | None:
    if ranges and not any(net.version == r.version and net.subnet_of(r) for r in ranges):  # type: ignore[arg-type]
        return "outside the enrollment token's address ranges"
    owner = owners.owner(net, me)
    return None if owner is None else f"held by workload {owner}"


def _address_events(name: str, agent: str, refused: Mapping[str, str]) -> list[dict[str, Any]]:
    return [
        {
            "kind": "address-refused",
            "workload": name,
            "message": f"{name}: agent {agent} claimed {address}: refused, {why}",
            "details": {"agent": agent, "address": address, "reason": why},
        }
        for address, why in refused.items()
    ]


def _parse(text: str) -> addresses.Network:
    try:
        return addresses.network(text)
    except errors.ValidationError:
        raise errors.ValidationError(f"{text!r} is not an IP address", "inventory.addresses") from None


def _spec(doc: Doc | None) -> dict[str, Any]:
    return dict((doc or {}).get("spec") or {})


def _labels(doc: Doc | None) -> dict[str, str]:
    return dict(((doc or {}).get("metadata") or {}).get("labels") or {})


def _document(name: str, labels: dict[str, str], spec: dict[str, Any], old: Doc | None) -> Doc:
    meta: dict[str, Any] = {**((old or {}).get("metadata") or {}), "name": name}
    meta.pop("labels", None)
    if labels:
        meta["labels"] = labels
    return {"apiVersion": kinds.API_VERSION, "kind": "Workload", "metadata": meta, "spec": spec}

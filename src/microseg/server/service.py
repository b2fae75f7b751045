"""Changes to objects: validate the whole result first, then write it with its audit record in
one transaction. Bad input raises and changes nothing.

Fed by the routes; feeds the store. Policy kinds change the draft (and are checked with the
whole draft through the loader, so a rule naming a deleted service is refused); live kinds change
the inventory at once and bump the inventory generation, which recompiles every replica. A bulk
apply asks `applysets` what to write (workloads merged, not replaced; prunes of its apply set).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa

from microseg import errors
from microseg.model import labelrules, labels, selectors, workloads
from microseg.server import applysets, compose, exceptions, inventory, kinds, provisioning
from microseg.server.auth import Principal
from microseg.server.problems import Problem
from microseg.server.runtime import Runtime
from microseg.store import agents, audit, objects, state, tokens
from microseg.store import applysets as memberships

Doc = dict[str, Any]
Key = tuple[str, str]


def check_preconditions(old: objects.Stored | None, if_match: str | None, if_none_match: str | None) -> None:
    """HTTP conditional requests: If-Match (optimistic concurrency) and If-None-Match: * (create only)."""
    if if_match is not None:
        wanted = {t.strip().removeprefix("W/").strip('"') for t in if_match.split(",")}
        if old is None or ("*" not in wanted and old.etag not in wanted):
            raise Problem(
                412,
                "Precondition failed",
                "the object changed since you read it (ETag mismatch)"
                if old
                else "the object does not exist",
            )
    if if_none_match is not None and if_none_match.strip() == "*" and old is not None:
        raise Problem(412, "Precondition failed", "the object already exists")


def header(doc: Doc, kind: str | None = None, name: str | None = None) -> tuple[kinds.Kind, str]:
    """A document's kind and stored name, checked against the URL it was sent to."""
    found = kinds.check_header(doc)
    key = kinds.object_name(doc)
    if kind is not None and found.name != kind:
        raise errors.ValidationError(f"this URL takes kind {kind}, the document is a {found.name}", "kind")
    if name is not None and key != name:
        raise errors.ValidationError(f"the URL names {name!r}, the document {key!r}", "metadata.name")
    return found, key


def validate(rt: Runtime, conn: sa.Connection, changes: dict[Key, Doc | None]) -> None:
    """Raise InvalidError unless the objects, with `changes` applied, form a valid estate."""
    touched = {k for k, _ in changes}
    if touched & {*kinds.DRAFT, "LabelRule"}:
        current: dict[Key, Doc | None] = {
            (o.kind, o.name): o.doc for o in objects.of_kinds(conn, (*kinds.DRAFT, "LabelRule"))
        }
        current.update(changes)
        compose.load_policy([d for d in current.values() if d is not None])
    if "Workload" in touched:
        _check_workloads(rt, conn, {k[1]: d for k, d in changes.items() if k[0] == "Workload"})
    for (kind, _), doc in changes.items():
        if kind == "ModeScope" and doc is not None:
            compose.mode_scope(doc)


def _check_workloads(rt: Runtime, conn: sa.Connection, changed: dict[str, Doc | None]) -> None:
    stored = {o.name: o for o in objects.of_kinds(conn, ("Workload",))}
    owners = inventory.AddressOwners(
        rt.workloads.model(o.doc, o.etag) for name, o in stored.items() if name not in changed
    )
    for doc in changed.values():
        if doc is not None:
            model = rt.workloads.model(doc)
            owners.check(model)
            owners.add(model)


def _write(
    conn: sa.Connection,
    who: Principal,
    key: Key,
    old: objects.Stored | None,
    doc: Doc | None,
    *,
    more: dict[str, Any] | None = None,
) -> None:
    kind, name = key
    if kind == "Workload" and doc is None:
        _revoke_agent_of(conn, who, name)
    if doc is None:
        objects.delete(conn, kind, name)
    else:
        objects.put(conn, kind, name, doc, who.actor)
    if old is None or doc is None:  # made anew or gone: in no apply set (an apply records its own)
        memberships.forget(conn, kind, name)
    action = "delete" if doc is None else "create" if old is None else "update"
    details = {"before": old.doc if old else None, "after": doc, **(more or {})}
    audit.record(conn, who.actor, action, f"{kind}/{name}", details)


def _revoke_agent_of(conn: sa.Connection, who: Principal, workload: str) -> None:
    """A deleted workload's live agent loses its credential: that is revoking an agent, which
    needs an admin (as `DELETE /agents/{id}`) and is audited as such. 403 for anyone else."""
    found = _live_agent_of(conn, who, workload)
    if found is None:
        return
    agents.revoke(conn, found["id"])
    audit.record(conn, who.actor, "revoke-agent", f"agent/{found['id']}", {"workload": workload})


def _live_agent_of(conn: sa.Connection, who: Principal, workload: str) -> dict[str, Any] | None:
    """The workload's live agent, which only an admin may revoke (403 for anyone else); None."""
    found = agents.by_workload(conn, workload)
    if found is None or found["revoked_at"] is not None:
        return None
    if who.kind != "token" or tokens.ROLES.index(who.role) < tokens.ROLES.index("admin"):
        why = f"workload {workload} has a live agent; deleting it revokes that agent: an admin's act"
        raise Problem(403, "Forbidden", why)
    return found


def save(
    rt: Runtime,
    who: Principal,
    doc: Doc,
    *,
    kind: str | None = None,
    name: str | None = None,
    if_match: str | None = None,
    if_none_match: str | None = None,
) -> tuple[objects.Stored, bool]:
    """Create or replace one object; (what is stored now, whether it was created)."""
    found, key_name = header(doc, kind, name)
    key = (found.name, key_name)
    with rt.db.write() as conn:
        old = objects.get(conn, *key)
        check_preconditions(old, if_match, if_none_match)
        doc = exceptions.unapproved(old, doc)
        if old is not None and old.doc == doc:
            return old, False
        validate(rt, conn, {key: doc})
        _write(conn, who, key, old, doc)
        if not found.draft:
            state.bump_inventory(conn)
        stored = objects.get(conn, *key)
    rt.poke()
    assert stored is not None
    return stored, old is None


def remove(rt: Runtime, who: Principal, kind: str, name: str, if_match: str | None = None) -> None:
    """Delete one object (refused when anything still refers to it)."""
    with rt.db.write() as conn:
        old = objects.get(conn, kind, name)
        if old is None:
            raise errors.LookupFailedError(f"no {kind} called {name!r}")
        check_preconditions(old, if_match, None)
        validate(rt, conn, {(kind, name): None})
        _write(conn, who, (kind, name), old, None)
        if not kinds.KINDS[kind].draft:
            state.bump_inventory(conn)
    rt.poke()


def apply(
    rt: Runtime,
    who: Principal,
    docs: list[Doc],
    *,
    apply_set: str | None = None,
    prune: bool = False,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Create or merge many objects, all of them or (on any problem) none, as the apply set
    `apply_set` (None: in no set; memberships stay as they are, as with PUT); with `prune`, also
    delete the set's objects the documents no longer hold (`applysets`). A dry run checks the
    same and answers the same, plus the draft diff, and writes nothing.

    Cost: one read per document, the set's memberships, the validation of the whole draft (and
    inventory when workloads change); a dry run also compiles the active and the new draft."""
    if prune and apply_set is None:
        raise errors.ValidationError("prune needs the name of the apply set to prune", "applySet")
    wanted = _wanted(docs)
    with rt.db.read() if dry_run else rt.db.write() as conn:
        if not dry_run:
            rt.db.lock(conn, "apply")  # two applies of one set must not interleave their prunes
        plan = applysets.plan(conn, apply_set, wanted, prune=prune)
        validate(rt, conn, plan.changes)
        result = _applied(apply_set, wanted, plan)
        if dry_run:
            for kind, name in plan.pruned:
                if kind == "Workload":
                    _live_agent_of(conn, who, name)  # the same 403 the real apply gives
            return {**result, "dryRun": True, "diff": _draft_diff_after(rt, conn, plan.changes)}
        _write_plan(conn, who, apply_set, plan)
    rt.poke()
    return {**result, "dryRun": False}


def _wanted(docs: list[Doc]) -> dict[Key, Doc]:
    """The documents of an apply by (kind, stored name); each object once."""
    wanted: dict[Key, Doc] = {}
    for doc in compose.api_documents(docs):
        if not isinstance(doc, dict):
            raise errors.ValidationError("every document must be a mapping")
        found, name = header(doc)
        if (found.name, name) in wanted:
            raise errors.ValidationError(f"{found.name} {name} appears twice in one apply")
        wanted[(found.name, name)] = doc
    return wanted


def _write_plan(conn: sa.Connection, who: Principal, apply_set: str | None, plan: applysets.Plan) -> None:
    for key, changed in plan.changes.items():
        more: dict[str, Any] = {"applySet": apply_set} if apply_set is not None else {}
        if key in plan.pruned:
            more["pruned"] = True
        _write(conn, who, key, plan.olds[key], changed, more=more)
    for key, before in plan.adopted.items():
        if key not in plan.changes:  # a change's own record names the set already
            details = {"applySet": apply_set, "from": before}
            audit.record(conn, who.actor, "adopt", f"{key[0]}/{key[1]}", details)
    memberships.record(conn, plan.members, who.actor)
    if any(not kinds.KINDS[k].draft for k, _ in plan.changes):
        state.bump_inventory(conn)


def _applied(apply_set: str | None, wanted: dict[Key, Doc], plan: applysets.Plan) -> dict[str, Any]:
    """The answer: objects by what happens to them, the set, and what was not taken."""
    result: dict[str, Any] = {"applySet": apply_set}
    for bucket in ("created", "updated", "unchanged"):
        result[bucket] = []
    for key in wanted:
        old, ref = plan.olds[key], f"{key[0]}/{key[1]}"
        bucket = "unchanged" if key not in plan.changes else "created" if old is None else "updated"
        result[bucket].append(ref)
    result["pruned"] = [f"{k}/{n}" for k, n in plan.pruned]
    result["adopted"] = {f"{k}/{n}": before for (k, n), before in plan.adopted.items()}
    result["conflicts"] = [c.to_json() for c in plan.conflicts]
    return result


def _draft_diff_after(rt: Runtime, conn: sa.Connection, changes: dict[Key, Doc | None]) -> dict[str, Any]:
    """`GET /draft/diff` as it would answer once `changes` are written (nothing is written)."""
    draft = {(o.kind, o.name): o for o in objects.of_kinds(conn, kinds.DRAFT)}
    live = {(o.kind, o.name): o for o in objects.of_kinds(conn, kinds.LIVE)}
    for key, doc in changes.items():
        side = draft if kinds.KINDS[key[0]].draft else live
        side.pop(key, None)
        if doc is not None:
            side[key] = objects.Stored(*key, doc, objects.etag(doc), 0.0, "dry-run")
    after = list(live.values())
    active = provisioning.version_documents(conn, "active")
    new = [o.doc for o in draft.values()]
    return provisioning.documents_diff(rt, ("active", active, after), ("draft", new, after))


def label_rules(conn: sa.Connection) -> tuple[labelrules.LabelRule, ...]:
    """The live label rules as models."""
    return compose.load_policy([o.doc for o in objects.of_kinds(conn, ("LabelRule",))]).label_rules


def select_workloads(rt: Runtime, conn: sa.Connection, selector: str | None) -> list[objects.Stored]:
    """Stored workloads whose effective labels (after label rules) match a kubectl selector."""
    stored = objects.of_kinds(conn, ("Workload",))
    if not selector:
        return stored
    sel = selectors.LabelSelector.parse(selector)
    rules = label_rules(conn)
    return [
        o
        for o in stored
        if sel.matches(labelrules.effective_labels(rt.workloads.model(o.doc, o.etag), rules))
    ]


def modify_workloads(
    rt: Runtime, who: Principal, names: Iterable[str], change: Callable[[Doc], Doc], action: str
) -> list[str]:
    """Rewrite workloads' documents with `change` (validated together; one audit record each)."""
    with rt.db.write() as conn:
        olds = {}
        for name in names:
            old = objects.get(conn, "Workload", name)
            if old is None:
                raise errors.LookupFailedError(f"no workload called {name!r}")
            olds[name] = old
        new = {name: change(_copy(old.doc)) for name, old in olds.items()}
        changes: dict[Key, Doc | None] = {("Workload", n): d for n, d in new.items() if d != olds[n].doc}
        validate(rt, conn, changes)
        for (_, name), doc in changes.items():
            assert doc is not None
            objects.put(conn, "Workload", name, doc, who.actor)
            audit.record(
                conn, who.actor, action, f"Workload/{name}", {"before": olds[name].doc, "after": doc}
            )
        if changes:
            state.bump_inventory(conn)
    rt.poke()
    return sorted(k[1] for k in changes)


def _copy(doc: Doc) -> Doc:
    meta = dict(doc.get("metadata") or {})
    meta["labels"] = dict(meta.get("labels") or {})
    return {**doc, "metadata": meta, "spec": dict(doc.get("spec") or {})}


def checked_labels(given: dict[str, str], field: str) -> labels.Labels:
    """Labels from a request; a bad one is a ValidationError naming `field.key`."""
    for key, value in given.items():  # one by one, so that the problem names the label
        try:
            labels.Labels({key: value})
        except errors.ValidationError as exc:
            raise errors.ValidationError(exc.message, f"{field}.{key}") from None
    return labels.Labels(given)


def relabel(add: dict[str, str], remove: list[str]) -> Callable[[Doc], Doc]:
    """A change that adds (or replaces) and removes labels."""
    checked = checked_labels(add, "add")

    def change(doc: Doc) -> Doc:
        current = {k: v for k, v in doc["metadata"]["labels"].items() if k not in remove}
        doc["metadata"]["labels"] = {**current, **dict(checked)}
        if not doc["metadata"]["labels"]:
            del doc["metadata"]["labels"]
        return doc

    return change


def set_mode(mode: workloads.Mode) -> Callable[[Doc], Doc]:
    """A change that sets a workload's own enforcement mode."""

    def change(doc: Doc) -> Doc:
        doc["spec"]["mode"] = mode.value
        return doc

    return change

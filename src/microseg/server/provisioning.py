"""Drafts become versions: provision, rollback, revert, and the diffs between any two.

Provisioning runs under a database lock (`Database.lock("provision")`), so replicas provisioning at
the same moment get consecutive numbers, never the same or a gap. A version stores the draft's
objects exactly; rollback provisions an older version's objects as a new version and resets the
draft to them (pending draft edits are dropped, and the audit log keeps them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from microseg import errors
from microseg.engine import engine as engines
from microseg.engine import invariants, lint, reachability
from microseg.model import estate
from microseg.server import compose, kinds, runtime
from microseg.server.auth import Principal
from microseg.server.problems import Problem
from microseg.server.runtime import Runtime
from microseg.store import audit, objects, state, versions

Doc = dict[str, Any]
CHANGE_LIMIT = 500
"""Reachability changes listed in a diff (the total is always given)."""
VIOLATION_LIMIT = 100
"""Invariant violations listed in a refusal, an audit record or a diff (the total is given)."""
WARNING_LIMIT = 200
"""Lint warnings listed in a diff (`warningsTotal` gives them all)."""
MAX_VERSION = 2**31 - 1
"""The largest version number the store holds (a 32-bit column); larger ones are refused as input."""


def _keyed(docs: list[Doc]) -> dict[str, Doc]:
    return {f"{d['kind']}/{kinds.object_name(d)}": d for d in docs}


def _named(docs: list[Doc]) -> list[tuple[str, Doc]]:
    return [(kinds.object_name(d), d) for d in docs]


def object_changes(before: list[Doc], after: list[Doc]) -> dict[str, list[str]]:
    """Objects added, removed and changed between two sets of policy objects."""
    old, new = _keyed(before), _keyed(after)
    return {
        "added": sorted(new.keys() - old.keys()),
        "removed": sorted(old.keys() - new.keys()),
        "changed": sorted(k for k in old.keys() & new.keys() if old[k] != new[k]),
    }


def draft_documents(conn: sa.Connection) -> list[Doc]:
    """The draft's policy objects."""
    return [o.doc for o in objects.of_kinds(conn, kinds.DRAFT)]


def broken_invariants(est: estate.Estate) -> list[invariants.Violation]:
    """What `est` allows that its invariants rule out (nothing to do when it declares none)."""
    if not est.invariants:
        return []
    return invariants.Guard(engines.PolicyEngine(est)).check()


def violation_json(v: invariants.Violation) -> dict[str, Any]:
    """A violation for the API; `excepted` when an approved Exception is what allows it."""
    return {**v.to_dict(), "excepted": v.verdict.tier == compose.EXCEPTION_TIER}


def _refuse_or_record(
    conn: sa.Connection, who: Principal, broken: list[invariants.Violation], force: bool
) -> list[dict[str, Any]]:
    """Refuse (409, nothing changes) unless forced; a forced provision is audited on its own.

    Violations that an Exception allows do not refuse: an exception is the reviewed way to step
    over a guard rail (owner, reason, approver, expiry), and it is listed with the version. Nor do
    those of the built-in quarantine rules: an incident in progress must not block the fixes made
    during it (they are listed as `quarantine: true`)."""
    listed = [violation_json(v) for v in broken[:VIOLATION_LIMIT]]
    refusing = refusing_violations(broken)
    if not refusing:
        return listed
    if not force:
        names = sorted({v.invariant for v in refusing})
        raise Problem(
            409,
            "Invariants broken",
            f"the policy breaks invariant(s) {', '.join(names)} ({len(refusing)} violation(s)): "
            f"{refusing[0]}; nothing was provisioned (fix the draft, or provision with force)",
            violations=[violation_json(v) for v in refusing[:VIOLATION_LIMIT]],
            total=len(refusing),
        )
    details = {"violations": listed, "total": len(broken)}
    audit.record(conn, who.actor, "override-invariants", "draft", details)
    return listed


def refusing_violations(broken: list[invariants.Violation]) -> list[invariants.Violation]:
    """The violations that make a provision refuse (409): not allowed by an approved Exception, nor
    by a built-in quarantine rule."""
    return [v for v in broken if v.verdict.tier != compose.EXCEPTION_TIER and not v.quarantine]


@dataclass(frozen=True)
class Provisioned:
    """A new version, and the invariant violations it went through with (excepted, quarantine or
    forced; at most VIOLATION_LIMIT)."""

    version: versions.Version
    violations: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        """The API answer: the version, and `quarantineExempt`, what only a quarantine allows."""
        exempt = [v for v in self.violations if v["quarantine"]]
        return version_json(self.version) | {"quarantineExempt": exempt}


def _provision(
    rt: Runtime, who: Principal, note: str, docs: list[Doc] | None, rollback_of: int | None, *, force: bool
) -> Provisioned:
    with rt.db.write() as conn:
        rt.db.lock(conn, "microseg-provision")
        active, _ = state.read(conn)
        current = versions.get(conn, active) if active else None
        content = draft_documents(conn) if docs is None else docs
        changes = object_changes(current.documents if current else [], content)
        if current is not None and not any(changes.values()):
            raise Problem(409, "Nothing to provision", f"the content equals the active version v{active}")
        label_rules = objects.of_kinds(conn, ("LabelRule",))
        parsed = compose.load_policy([*content, *(o.doc for o in label_rules)])
        overridden: list[dict[str, Any]] = []
        if parsed.invariants:
            # the policy parsed once above, over the live inventory (label rules are live objects too)
            broken = broken_invariants(rt.over_live(parsed, objects.of_kinds(conn, kinds.LIVE), 0))
            overridden = _refuse_or_record(conn, who, broken, force)
        number = versions.next_number(conn)
        version = versions.new(
            number, note=note, actor=who.actor, documents=content, changes=changes, rollback_of=rollback_of
        )
        versions.insert(conn, version)
        state.set_active(conn, number)
        if docs is not None:
            objects.replace_kinds(conn, kinds.DRAFT, _named(docs), who.actor)
        action = "rollback" if rollback_of else "provision"
        audit.record(
            conn,
            who.actor,
            action,
            f"version/{number}",
            {"note": note, "changes": changes, "rollbackOf": rollback_of}
            | ({"invariantsBroken": overridden} if overridden else {}),
        )
    rt.remember_policy(runtime.policy_key(number, label_rules), parsed)
    rt.poke()
    return Provisioned(version, overridden)


def provision(rt: Runtime, who: Principal, note: str, *, force: bool = False) -> Provisioned:
    """The draft becomes the next version (409 when it equals the active one, or breaks an
    invariant and `force` is false)."""
    return _provision(rt, who, note, None, None, force=force)


def rollback(rt: Runtime, who: Principal, number: int, note: str, *, force: bool = False) -> Provisioned:
    """Provision version `number`'s objects again, as a new version; the draft becomes them too
    (an older version is checked against the invariants it declares, like any provision)."""
    with rt.db.read() as conn:
        old = versions.get(conn, number)
    if old is None:
        raise errors.LookupFailedError(f"no version {number}")
    return _provision(rt, who, note or f"rollback to v{number}", old.documents, number, force=force)


def revert_draft(rt: Runtime, who: Principal) -> dict[str, list[str]]:
    """Throw the draft's edits away: the draft becomes the active version again."""
    with rt.db.write() as conn:
        active, _ = state.read(conn)
        current = versions.get(conn, active) if active else None
        docs = current.documents if current else []
        changes = object_changes(draft_documents(conn), docs)
        objects.replace_kinds(conn, kinds.DRAFT, _named(docs), who.actor)
        audit.record(conn, who.actor, "revert-draft", "draft", {"changes": changes, "toVersion": active})
    return changes


def version_documents(conn: sa.Connection, ref: str) -> list[Doc]:
    """`draft`, `active` or a version number -> its policy objects."""
    if ref == "draft":
        return draft_documents(conn)
    number = state.read(conn)[0] if ref == "active" else _number(ref)
    if number == 0:
        return []
    found = versions.get(conn, number)
    if found is None:
        raise errors.LookupFailedError(f"no version {ref}")
    return found.documents


def _number(ref: str) -> int:
    text = ref.removeprefix("v")
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_VERSION:
        raise errors.ValidationError(f"{ref!r} is not draft, active or a version number")
    return int(text)


def diff(rt: Runtime, old_ref: str, new_ref: str) -> dict[str, Any]:
    """Objects changed, rules changed and the semantic reachability change between two policies,
    both over the current live inventory."""
    with rt.db.read() as conn:
        old_docs, new_docs = version_documents(conn, old_ref), version_documents(conn, new_ref)
        live = objects.of_kinds(conn, kinds.LIVE)
    return documents_diff(rt, (old_ref, old_docs, live), (new_ref, new_docs, live))


Side = tuple[str, list[Doc], list[objects.Stored]]
"""One side of a diff: its name, its policy objects and the live inventory it is judged over."""


def documents_diff(rt: Runtime, old: Side, new: Side) -> dict[str, Any]:
    """`diff` of two policies given as documents (an apply's dry run passes what it would write)."""
    (old_ref, old_docs, old_live), (new_ref, new_docs, new_live) = old, new
    old_est, new_est = rt.estate(old_docs, old_live, 0), rt.estate(new_docs, new_live, 0)
    old_eng, new_eng = engines.PolicyEngine(old_est), engines.PolicyEngine(new_est)
    broken = invariants.Guard(new_eng).check() if new_est.invariants else []
    warnings = lint.lint(new_eng)
    return {
        "from": old_ref,
        "to": new_ref,
        "objects": object_changes(old_docs, new_docs),
        "rules": estate.rule_changes(old_est, new_est),
        "reachability": semantic_changes(old_eng, new_eng),
        "invariants": {
            "declared": len(new_est.invariants),
            "violations": [violation_json(v) for v in broken[:VIOLATION_LIMIT]],
            "total": len(broken),
            "refusing": len(refusing_violations(broken)),
        },
        "warnings": [w.to_dict() for w in warnings[:WARNING_LIMIT]],
        "warningsTotal": len(warnings),
    }


def semantic_changes(old_eng: engines.PolicyEngine, new_eng: engines.PolicyEngine) -> dict[str, Any]:
    """Which workload pairs and ports gain or lose reachability, each with both verdicts."""
    probes = sorted(
        set(reachability.probes_of(old_eng)) | set(reachability.probes_of(new_eng)),
        key=lambda p: (p[0].value, p[1] or 0),
    )
    found = reachability.semantic_diff(old_eng, new_eng, probes)
    listed = [
        {
            "from": c.source,
            "to": c.destination,
            "port": c.probe,
            "change": "gained" if c.gained else "lost",
            "before": c.before.to_dict(),
            "after": c.after.to_dict(),
        }
        for c in found[:CHANGE_LIMIT]
    ]
    gained = sum(1 for c in found if c.gained)
    return {
        "total": len(found),
        "gained": gained,
        "lost": len(found) - gained,
        "changes": listed,
        "truncated": len(found) > CHANGE_LIMIT,
    }


def version_json(v: versions.Version, *, documents: bool = False) -> dict[str, Any]:
    """A version for the API."""
    out: dict[str, Any] = {
        "number": v.number,
        "name": f"v{v.number}",
        "note": v.note,
        "createdAt": v.created_at,
        "createdBy": v.created_by,
        "rollbackOf": v.rollback_of,
        "changes": v.changes,
    }
    if documents:
        out["documents"] = v.documents
    return out

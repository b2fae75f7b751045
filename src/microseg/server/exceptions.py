"""Exceptions need four eyes: requested by one user, approved by another, then in force until expiry.

An Exception object (owner, reason, ticket, expiry, from, to, services) is a request until
`POST /exceptions/{name}/approve` by an editor or admin other than the user who last wrote it
sets `spec.approver` and `spec.approvedAt`. "Other" means another token owner (the person holding
it), not another token: a token that the requester's owner created, directly or through tokens it
created, cannot approve, nor can the owner who created the requester's token. Only approved
exceptions become rules (compose skips requests), and only after a provision, like every policy
change. Approval covers exactly what was approved: any later change to the object drops it (the
server strips `approver` from a write that changes anything else), so nobody can widen an
approved exception unseen.

Expiry needs no cron job: the rule carries `notAfter`, which the engine and the rendered
nftables rule (`meta time <`) both honour.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from microseg import errors
from microseg.server.auth import Principal
from microseg.server.problems import Problem
from microseg.server.runtime import Runtime
from microseg.store import audit, objects, tokens

Doc = dict[str, Any]
APPROVAL_FIELDS = ("approver", "approvedAt")


def unapproved(old: objects.Stored | None, doc: Doc) -> Doc:
    """`doc` as it may be written: approval fields kept only when nothing else changes."""
    if doc.get("kind") != "Exception":
        return doc
    spec = dict(doc.get("spec") or {})
    old_spec = dict((old.doc.get("spec") or {}) if old else {})
    same = old is not None and _without_approval(old_spec) == _without_approval(spec)
    if same:
        for field in APPROVAL_FIELDS:
            if field in old_spec:
                spec[field] = old_spec[field]
    else:
        for field in APPROVAL_FIELDS:
            spec.pop(field, None)
    return {**doc, "spec": spec}


def _without_approval(spec: Doc) -> Doc:
    return {k: v for k, v in spec.items() if k not in APPROVAL_FIELDS}


def approve(rt: Runtime, who: Principal, name: str) -> Doc:
    """Approve a requested exception (403 for its own requester, 409 when already approved)."""
    with rt.db.write() as conn:
        stored = objects.get(conn, "Exception", name)
        if stored is None:
            raise errors.LookupFailedError(f"no Exception called {name!r}")
        approver = (stored.doc.get("spec") or {}).get("approver")
        if approver:
            raise Problem(409, "Already approved", f"exception {name} was approved by {approver}")
        requester = _owners(conn, stored.updated_by)
        _four_eyes(name, stored.updated_by, requester, who, _owners(conn, who.actor))
        when = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        doc = {**stored.doc, "spec": {**stored.doc["spec"], "approver": who.actor, "approvedAt": when}}
        objects.put(conn, "Exception", name, doc, who.actor)
        audit.record(
            conn,
            who.actor,
            "approve-exception",
            f"Exception/{name}",
            {
                "requestedBy": stored.updated_by,
                "requesterOwner": requester[0] if requester else None,
                "approverOwner": who.owner,
                "before": stored.doc,
                "after": doc,
            },
        )
    return doc


def _owners(conn: sa.Connection, actor: str) -> list[str]:
    """The owner of the API token an actor names, then the owners of the tokens that created it
    (empty when the actor is no token: an agent, a hook, the CLI)."""
    ident = tokens.creator_id(actor)
    return [] if ident is None else [t.owner for t in tokens.lineage(conn, ident)]


def _four_eyes(
    name: str, requested_by: str, requester: list[str], who: Principal, approver: list[str]
) -> None:
    """403 unless two different people are involved. A person can mint tokens under any owner, so
    a token made (directly or through others) by the requester's owner does not count as a second
    person, nor does the requester's token when the approver's owner made it."""
    related = bool(set(requester[:1]) & set(approver)) or bool(set(approver[:1]) & set(requester))
    if requested_by == who.actor or related:
        why = (
            f"exception {name} was requested by {requested_by}; another user must approve it "
            "(not a token of the same owner, nor one either owner's tokens created for the other)"
        )
        raise Problem(403, "Forbidden", why)

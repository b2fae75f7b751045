"""Authentication and roles: every request carries `Authorization: Bearer <token>`.

API tokens (`msk_...`) carry a role: viewer reads, editor also changes the draft and inventory and
provisions, admin also manages tokens and agents. Agent credentials (`msa_...`) can only use the
agent endpoints, and only for their own workload. A missing or unknown token is 401; a known token
without the right is 403. Tokens are looked up by their hash on every request, so a revocation
takes effect at once on every replica.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from microseg.server.problems import Problem
from microseg.store import agents, database, tokens


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API token with a role, or an agent of one workload."""

    kind: str
    """`token`, `agent`, or `hook` (a signed webhook call)."""
    id: str
    name: str
    role: str = ""
    workload: str = ""
    owner: str = ""
    """Who holds an API token (a person or system): what four-eyes compares."""

    @property
    def actor(self) -> str:
        """How the audit log names this caller: `token:NAME(ID)@OWNER`, `agent:WORKLOAD`, `hook:NAME`.

        Parentheses in the owner become `_`, so `tokens.creator_id` finds the id unambiguously."""
        if self.kind == "hook":
            return f"hook:{self.name}"
        if self.kind == "agent":
            return f"agent:{self.workload}"
        owner = self.owner.replace("(", "_").replace(")", "_")
        return f"token:{self.name}({self.id})@{owner}" if owner else f"token:{self.name}({self.id})"


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(401, "Unauthorized", "send Authorization: Bearer <token>")
    return token.strip()


def principal(request: Request) -> Principal:
    """The caller, from its token (401 when there is none or it is unknown or revoked)."""
    token = _bearer(request)
    db = request.app.state.runtime.db
    with db.read() as conn:
        if token.startswith("msa_"):
            agent = agents.find(conn, token)
            if agent is not None:
                return Principal("agent", agent["id"], agent["workload"], workload=agent["workload"])
        elif token.startswith("msk_"):
            found = tokens.find_api(conn, token)
            if found is not None:
                return Principal("token", found.id, found.name, role=found.role, owner=found.owner)
    raise Problem(401, "Unauthorized", "unknown or revoked token")


def recheck_agent(db: database.Database, who: Principal) -> None:
    """401 unless the agent credential `who` is still live and bound to its workload: a request
    held open (a long-poll) must not outlive a revocation that came after its start."""
    with db.read() as conn:
        found = agents.by_workload(conn, who.workload)
    if found is None or found["id"] != who.id or found["revoked_at"] is not None:
        raise Problem(401, "Unauthorized", "this agent credential was revoked")


def requires(role: str) -> Callable[..., Principal]:
    """A dependency: an API token whose role is `role` or stronger."""
    needed = tokens.ROLES.index(role)

    def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if who.kind != "token":
            raise Problem(403, "Forbidden", "agent credentials can only use /api/v1/agent endpoints")
        if tokens.ROLES.index(who.role) < needed:
            raise Problem(403, "Forbidden", f"this needs the {role} role; the token has {who.role}")
        return who

    return check


def agent(who: Annotated[Principal, Depends(principal)]) -> Principal:
    """A dependency: an agent credential."""
    if who.kind != "agent":
        raise Problem(403, "Forbidden", "only agent credentials can use agent endpoints")
    return who


viewer = requires("viewer")
editor = requires("editor")
admin = requires("admin")

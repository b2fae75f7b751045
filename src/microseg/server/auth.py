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

import sqlalchemy as sa
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

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


async def agent_credential(request: Request) -> str:
    """A dependency for the ruleset long-poll: the digest of the agent credential, looked up later
    by the feed together with every other poll of its round (`agents_by_credential`), so that ten
    thousand polls cost a few queries, not ten thousand, and no trip through the thread pool. Any
    other token is judged as `agent` judges it (401 or 403) at once."""
    token = _bearer(request)
    if not token.startswith("msa_"):
        agent(await run_in_threadpool(principal, request))
    return tokens.digest(token)


def agents_by_credential(db: database.Database, digests: list[str]) -> dict[str, Principal]:
    """The live agents holding these credential digests (revoked and unknown ones are absent):
    checked for every long-poll each time it is answered, so none outlives a revocation."""
    found: dict[str, Principal] = {}
    table = agents.T
    columns = (table.c.secret_hash, table.c.id, table.c.workload)
    with db.read() as conn:
        for at in range(0, len(digests), 500):
            chunk = digests[at : at + 500]
            query = sa.select(*columns).where(table.c.secret_hash.in_(chunk), table.c.revoked_at.is_(None))
            for digest, ident, workload in conn.execute(query):
                found[digest] = Principal("agent", ident, workload, workload=workload)
    return found


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

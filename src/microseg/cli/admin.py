"""Administration verbs against a control plane: `delete KIND NAME`, `draft discard`,
`token list|revoke`, `agent list|revoke` and `exception create|list|approve`.

Thin REST clients of routes that exist (`/{kind}/{name}`, `DELETE /draft`, `/tokens`, `/agents`,
`/exceptions/{name}/approve`); the server decides who may do what, so nothing here checks roles.
`main` registers them; `remote` holds the shared plumbing (target, output formats, tables).
`agent` stays the command that runs the host agent: `agent_group` keeps it as the group's own
action, so `microseg agent --server URL --enroll-token T` works as before next to `agent list`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from microseg import errors
from microseg.cli import agent, client, output, remote

OBJECT_PATHS = (
    "workloads",
    "rules",
    "services",
    "iplists",
    "tiers",
    "exceptions",
    "invariants",
    "labelrules",
    "modescopes",
    "settings",
)
"""The kinds `delete` removes (agents are revoked, versions are history)."""
DRAFT_PATHS = {"rules", "services", "iplists", "tiers", "exceptions", "invariants", "settings"}


def delete(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help=", ".join(OBJECT_PATHS))],
    name: Annotated[str, typer.Argument(help="the object (rules: TIER/NAME)")],
) -> None:
    """Delete one object (policy kinds are removed from the draft, in effect after `provision`)."""
    path = remote.KINDS.get(kind.lower())
    if path not in OBJECT_PATHS:
        raise errors.UserError(f"cannot delete {kind!r}; kinds: {', '.join(OBJECT_PATHS)}")
    remote.connect(ctx).call("DELETE", client.item_path(path, name))
    where = (
        " from the draft (`microseg diff`, then `microseg provision -m NOTE`)" if path in DRAFT_PATHS else ""
    )
    output.console.print(f"{path} {name} deleted{where}")


UNDONE = {"added": "restored", "removed": "dropped", "changed": "reset"}
"""What discarding did to each object the draft had changed (the server's diff goes draft -> active)."""
draft_app = typer.Typer(name="draft", help="The draft on the server.", no_args_is_help=True)


@draft_app.command("discard")
@output.reporting
def discard(ctx: typer.Context, fmt: remote.Out = remote.Format.TABLE) -> None:
    """Throw away the draft's edits: it becomes the active version again (audited)."""
    changes = remote.connect(ctx).call("DELETE", "/draft")["reverted"]
    if remote.emit(changes, fmt):
        return
    for kind, refs in changes.items():  # from the draft to the active version
        for ref in refs:
            output.console.print(f"{ref} {UNDONE[kind]}")
    output.console.print("the draft is the active version again")


def token_list(ctx: typer.Context, fmt: remote.Out = remote.Format.TABLE) -> None:
    """API tokens on the server with their owners (never their secrets; admin)."""
    items = remote.connect(ctx).get("/tokens")["items"]
    if not remote.emit(items, fmt):
        remote.table(
            f"API tokens ({len(items)})",
            ["ID", "NAME", "ROLE", "OWNER", "CREATED", "BY", "REVOKED"],
            [
                [
                    t["id"],
                    t["name"],
                    t["role"],
                    t["owner"],
                    remote.when(t["created_at"]),
                    t["created_by"],
                    remote.when(t["revoked_at"]),
                ]
                for t in items
            ],
        )


def token_revoke(ctx: typer.Context, ident: Annotated[str, typer.Argument(help="the token's id")]) -> None:
    """Revoke an API token at once (admin; audited)."""
    remote.connect(ctx).call("DELETE", client.item_path("tokens", ident))
    output.console.print(f"revoked API token {ident}")


def agent_group(run_agent: Callable[..., None]) -> typer.Typer:
    """`microseg agent [OPTIONS]` runs the host agent as before; `agent list|revoke` administer."""
    group = agent.group(run_agent)
    group.command("list")(output.reporting(agent_list))
    group.command("revoke")(output.reporting(agent_revoke))
    return group


def agent_list(ctx: typer.Context, fmt: remote.Out = remote.Format.TABLE) -> None:
    """Agents on the server with their ids and state (needs a token: viewer or more)."""
    items = remote.connect(ctx).get("/agents")["items"]
    if not remote.emit(items, fmt):
        remote.table(
            f"agents ({len(items)})",
            ["ID", "WORKLOAD", "STATE", "ONLINE", "LAST SEEN", "REVOKED"],
            [
                [
                    a["id"],
                    a["workload"],
                    a["state"],
                    "yes" if a["online"] else "no",
                    remote.when(a["lastSeen"]),
                    "yes" if a["revoked"] else "no",
                ]
                for a in items
            ],
        )


def agent_revoke(ctx: typer.Context, ident: Annotated[str, typer.Argument(help="the agent's id")]) -> None:
    """Revoke an agent's credential: it can no longer fetch policy or report (admin; audited)."""
    remote.connect(ctx).call("DELETE", client.item_path("agents", ident))
    output.console.print(f"revoked agent {ident}")


exception_app = typer.Typer(
    name="exception",
    help="Time-limited exceptions: requested by one person, approved by another.",
    no_args_is_help=True,
)


@exception_app.command("create")
@output.reporting
def exception_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="the exception's name")],
    *,
    owner: Annotated[str, typer.Option(help="who answers for it (a team or person)")],
    reason: Annotated[str, typer.Option(help="why it is needed")],
    expires: Annotated[str, typer.Option(help="when it ends, e.g. 2027-01-31T00:00:00Z")],
    source: Annotated[
        list[str], typer.Option("--from", help="label selector, ipList:NAME, cidr:CIDR or any")
    ],
    destination: Annotated[list[str], typer.Option("--to", help="the same, for the destination")],
    service: Annotated[list[str], typer.Option("--service", help="a service name, e.g. mysql (repeat)")],
    ticket: Annotated[str | None, typer.Option(help="change ticket")] = None,
    fmt: remote.Out = remote.Format.TABLE,
) -> None:
    """Request an exception into the draft; it is in force only once another person approves it."""
    spec: dict[str, Any] = {
        "owner": owner,
        "reason": reason,
        "expires": expires,
        "from": [_peer(p) for p in source],
        "to": [_peer(p) for p in destination],
        "services": service,
        **({"ticket": ticket} if ticket else {}),
    }
    body = {"apiVersion": "microseg.io/v1", "kind": "Exception", "metadata": {"name": name}, "spec": spec}
    made = remote.connect(ctx).post("/exceptions", body)
    if not remote.emit(made, fmt):
        output.console.print(
            f"exception {name} requested: another person approves it with `microseg exception approve {name}`"
        )


def _peer(text: str) -> dict[str, Any]:
    kind, sep, value = text.partition(":")
    if sep and kind in ("ipList", "cidr"):
        return {kind: value}
    if text == "any":
        return {"any": True}
    return {"selector": text}


@exception_app.command("list")
@output.reporting
def exception_list(ctx: typer.Context, fmt: remote.Out = remote.Format.TABLE) -> None:
    """Exceptions in the draft: requested or approved, by whom, until when."""
    items = remote.connect(ctx).get("/exceptions", limit=10_000)["items"]
    if not remote.emit(items, fmt):
        remote.table(
            f"exceptions ({len(items)})",
            ["NAME", "OWNER", "EXPIRES", "REQUESTED BY", "APPROVED BY", "REASON"],
            [
                [
                    e["metadata"]["name"],
                    str(e["spec"].get("owner")),
                    str(e["spec"].get("expires")),
                    e["status"]["updatedBy"],
                    e["spec"].get("approver") or "not yet",
                    str(e["spec"].get("reason")),
                ]
                for e in items
            ],
        )


@exception_app.command("approve")
@output.reporting
def exception_approve(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="the exception")],
    fmt: remote.Out = remote.Format.TABLE,
) -> None:
    """Approve a requested exception (refused for its requester's own tokens); in force after provision."""
    done = remote.connect(ctx).post(client.item_path("exceptions", name, "approve"))
    if not remote.emit(done, fmt):
        output.console.print(
            f"exception {name} approved by {done['spec']['approver']} (in force after `microseg provision`)"
        )

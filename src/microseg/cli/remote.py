"""Commands against a control plane, kubectl-like: get, apply, provision, rollback, quarantine,
release, events, audit, login (and `diff` without files, in `policy.diff`).

Tables for people by default, `-o json` or `-o yaml` for scripts. `apply -f` loads the policy files
locally first, so their problems are reported with file:line before anything is sent, and then
sends every document at once: the server applies all of them or none.
"""

from __future__ import annotations

import datetime
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from microseg import errors, policyfile
from microseg.cli import client, output
from microseg.policyfile import dumper

PATHS = (
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
    "versions",
    "agents",
)
KINDS = {
    **{p: p for p in PATHS},
    **{p.removesuffix("s"): p for p in PATHS},
    "wl": "workloads",
    "svc": "services",
}


class Format(StrEnum):
    """Output formats of the server commands."""

    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


Out = Annotated[Format, typer.Option("-o", "--output", help="table, json or yaml")]


def target(ctx: typer.Context) -> client.Target:
    """The server and token given to `microseg` (see `main`)."""
    found = ctx.find_root().obj
    return found if isinstance(found, client.Target) else client.Target()


def connect(ctx: typer.Context) -> client.Client:
    """A client for the configured server, closed when the command ends."""
    api = client.Client(target(ctx))
    ctx.call_on_close(api.close)
    return api


def emit(data: Any, fmt: Format) -> bool:
    """Print `data` as JSON or YAML; False when the caller should print a table."""
    if fmt is Format.JSON:
        output.emit_json(data)
    elif fmt is Format.YAML:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))
    return fmt is not Format.TABLE


def when(epoch: float | None) -> str:
    """A time for tables."""
    if epoch is None:
        return "-"
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """Print one table."""
    t = Table(title=title)
    for column in columns:
        t.add_column(column)
    for row in rows:
        t.add_row(*row)
    output.console.print(t)


def get(
    ctx: typer.Context,
    kind: Annotated[
        str,
        typer.Argument(
            help="workloads, rules, services, iplists, tiers, exceptions, invariants, "
            "labelrules, modescopes, settings, versions, agents"
        ),
    ],
    name: Annotated[str | None, typer.Argument(help="one object (rules: TIER/NAME, versions: N)")] = None,
    selector: Annotated[
        str | None, typer.Option("-l", "--selector", help="label selector (workloads)")
    ] = None,
    fmt: Out = Format.TABLE,
) -> None:
    """List objects of a kind on the server, or show one."""
    path = KINDS.get(kind.lower())
    if path is None:
        raise errors.UserError(f"unknown kind {kind!r}; known: {', '.join(sorted(set(KINDS.values())))}")
    api = connect(ctx)
    if name is not None:
        found = api.get(f"/{path}/{name}")
        if not emit(found, fmt):
            emit(found, Format.YAML)
        return
    items = (
        api.get(f"/{path}", selector=selector, limit=10_000)["items"]
        if path != "versions"
        else api.get("/versions")["items"]
    )
    if emit(items, fmt):
        return
    columns, rows = _rows(path, items)
    table(f"{path} ({len(items)})", columns, rows)


def _rows(path: str, items: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    if path == "workloads":
        return ["NAME", "ADDRESSES", "LABELS", "MODE", "AGENT"], [
            [
                w["metadata"]["name"],
                ",".join(w["spec"].get("addresses", [])),
                ",".join(f"{k}={v}" for k, v in sorted(w["status"].get("effectiveLabels", {}).items())),
                w["status"].get("mode", "-"),
                w["status"].get("agent", "-"),
            ]
            for w in items
        ]
    if path == "rules":
        return ["RULE", "PRIORITY", "ACTION", "FROM", "TO", "SERVICES"], [
            [
                f"{r['spec'].get('tier')}/{r['metadata']['name']}",
                str(r["spec"].get("priority")),
                str(r["spec"].get("action")),
                _peers(r["spec"].get("from")),
                _peers(r["spec"].get("to")),
                json.dumps(r["spec"].get("services")),
            ]
            for r in items
        ]
    if path == "versions":
        return ["VERSION", "CREATED", "BY", "NOTE"], [
            [
                v["name"] + (f" (rollback of v{v['rollbackOf']})" if v.get("rollbackOf") else ""),
                when(v["createdAt"]),
                v["createdBy"],
                v["note"],
            ]
            for v in items
        ]
    if path == "agents":
        return ["WORKLOAD", "STATE", "ONLINE", "DATAPLANE", "LAST SEEN"], [
            [
                a["workload"],
                a["state"],
                "yes" if a["online"] else "no",
                a["dataplane"] or "-",
                when(a["lastSeen"]),
            ]
            for a in items
        ]
    return ["NAME", "UPDATED", "BY"], [
        [o["metadata"]["name"], when(o["status"]["updatedAt"]), o["status"]["updatedBy"]] for o in items
    ]


def _peers(value: Any) -> str:
    if not isinstance(value, list):
        return str(value)
    return " ".join(next(iter(p.values())) if isinstance(p, dict) and len(p) == 1 else str(p) for p in value)


def apply(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Option("-f", "--file", help="policy file or directory (repeatable)")],
    fmt: Out = Format.TABLE,
) -> None:
    """Create or replace objects from policy files (policy kinds go into the draft)."""
    est = policyfile.load(files)
    result = connect(ctx).post("/apply", {"documents": dumper.documents(est)})
    first = output.first_start(est.workloads)  # from the files: a ModeScope on the server may differ
    if not emit({**result, "firstStart": first}, fmt):
        print_applied(result)
        output.print_first_start(first)


def print_applied(result: dict[str, list[str]]) -> None:
    """What `POST /apply` created and updated, and where policy changes went."""
    for bucket in ("created", "updated"):
        for name in result[bucket]:
            output.console.print(f"{name} {bucket}")
    counts = {bucket: len(result[bucket]) for bucket in ("created", "updated", "unchanged")}
    output.console.print(
        "{created} created, {updated} updated, {unchanged} unchanged".format(**counts)
        + " (policy changes are in the draft: `microseg diff`, then `microseg provision -m NOTE`)"
    )


Force = Annotated[bool, typer.Option("--force", help="provision even though it breaks invariants (audited)")]


def provision(
    ctx: typer.Context,
    note: Annotated[str, typer.Option("-m", "--message", help="what this version changes and why")],
    force: Force = False,
    fmt: Out = Format.TABLE,
) -> None:
    """Provision the draft: it becomes the next numbered version, and agents get it."""
    version = connect(ctx).post("/versions", {"note": note, "force": force})
    if not emit(version, fmt):
        changes = version["changes"]
        counts = ", ".join(f"{len(changes[k])} {k}" for k in ("added", "changed", "removed"))
        output.console.print(f"provisioned {version['name']}: {counts}")


def rollback(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="the version to provision again (N or vN)")],
    *,
    note: Annotated[str, typer.Option("-m", "--message", help="why")] = "",
    force: Force = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="show what would change against the active version; change nothing"),
    ] = False,
    fmt: Out = Format.TABLE,
) -> None:
    """Provision an earlier version again (as a new version); the draft becomes it too."""
    number = version.removeprefix("v")
    if dry_run:
        diff = connect(ctx).get("/diff", **{"from": "active", "to": number})
        if not emit(diff, fmt):
            print_diff(diff, as_json=False)
            output.console.print(
                f"dry run: nothing changed (without --dry-run, v{number} is provisioned again)"
            )
        return
    made = connect(ctx).post(f"/versions/{number}/rollback", {"note": note, "force": force})
    if not emit(made, fmt):
        output.console.print(f"provisioned {made['name']}: the content of v{number}")


def quarantine(
    ctx: typer.Context,
    workload: Annotated[str, typer.Argument(help="workload to isolate")],
    level: Annotated[
        str, typer.Option(help="forensics: the quarantineAllow IP list stays; full: only the control plane")
    ] = "forensics",
    reason: Annotated[str, typer.Option(help="why (kept in the audit log and the event)")] = "",
    fmt: Out = Format.TABLE,
) -> None:
    """Isolate a workload at once; release restores the labels and mode it had before."""
    found = connect(ctx).post(f"/workloads/{workload}/quarantine", {"level": level, "reason": reason})
    if not emit(found, fmt):
        output.console.print(f"{workload} quarantined ({level})")


def release(
    ctx: typer.Context,
    workload: Annotated[str, typer.Argument(help="workload to release")],
    reason: Annotated[str, typer.Option(help="why (kept in the audit log and the event)")] = "",
    fmt: Out = Format.TABLE,
) -> None:
    """End a workload's quarantine: its labels and mode become those from before it."""
    found = connect(ctx).post(f"/workloads/{workload}/release", {"reason": reason})
    if not emit(found, fmt):
        output.console.print(f"{workload} released")


def events(
    ctx: typer.Context,
    kind: Annotated[
        str | None,
        typer.Option(
            help="tamper, blocked, would-block, agent-offline, agent-failed, quarantine, release, "
            "invariant-violation, flow-forged, enroll-refused, enroll-adopted, address-refused, "
            "labels-changed"
        ),
    ] = None,
    workload: Annotated[str | None, typer.Option(help="only this workload")] = None,
    limit: Annotated[int, typer.Option(help="how many")] = 100,
    fmt: Out = Format.TABLE,
) -> None:
    """Events the server recorded, oldest first."""
    items = connect(ctx).get("/events", kind=kind, workload=workload, limit=limit)["items"]
    if not emit(items, fmt):
        table(
            "events",
            ["ID", "WHEN", "KIND", "WORKLOAD", "MESSAGE"],
            [[str(e["id"]), when(e["at"]), e["kind"], e["workload"] or "-", e["message"]] for e in items],
        )


def audit(
    ctx: typer.Context,
    target_prefix: Annotated[
        str | None, typer.Option("--target", help="e.g. Rule/ or Workload/web-1")
    ] = None,
    actor: Annotated[str | None, typer.Option(help="only this actor")] = None,
    limit: Annotated[int, typer.Option(help="how many")] = 100,
    fmt: Out = Format.TABLE,
) -> None:
    """The audit log: who changed what, when (the diff is in -o json / yaml)."""
    items = connect(ctx).get("/audit", target=target_prefix, actor=actor, limit=limit)["items"]
    if not emit(items, fmt):
        table(
            "audit",
            ["ID", "WHEN", "ACTOR", "ACTION", "TARGET"],
            [[str(r["id"]), when(r["at"]), r["actor"], r["action"], r["target"]] for r in items],
        )


def login(
    server: Annotated[str, typer.Option("--server", help="control plane URL")],
    token: Annotated[str, typer.Option("--token", help="API token")],
    config: Annotated[
        str | None, typer.Option(help="config file (default ~/.config/microseg/config.yaml)")
    ] = None,
) -> None:
    """Check a server and token, and save them in the config file (owner-readable only)."""
    checking = client.Client(client.Target(server, token))
    try:
        checking.get("/versions", limit=1)
    finally:
        checking.close()
    path = client.config_path(config)
    client.write_config(path, server, token)
    output.console.print(f"saved server {server} in {path}")


def draft_diff(ctx: typer.Context, as_json: bool) -> None:
    """`microseg diff` without files: the draft against the active version, on the server."""
    print_diff(connect(ctx).get("/draft/diff"), as_json)


def print_diff(diff: dict[str, Any], as_json: bool) -> None:
    """A server diff: objects changed, then the reachability it changes."""
    if as_json:
        output.emit_json(diff)
        return
    con = output.console
    for kind, refs in diff["objects"].items():
        for ref in refs:
            con.print(f"{ref} {kind}")
    reach = diff["reachability"]
    if not reach["total"]:
        con.print("no reachability change between known workloads")
        return
    table(
        f"Reachability changes ({reach['total']} workload pairs x ports)",
        ["CHANGE", "FROM", "TO", "PORT", "BECAUSE OF"],
        [
            [
                c["change"],
                c["from"],
                c["to"],
                c["port"],
                c["after"]["rule"] or c["before"]["rule"] or "default deny",
            ]
            for c in reach["changes"]
        ],
    )
    con.print(
        f"{reach['gained']} gained, {reach['lost']} lost"
        + (" (list truncated)" if reach["truncated"] else "")
    )

"""Commands against a control plane, kubectl-like: get, apply, provision, rollback, quarantine,
release, events, audit, login (and `diff` without files, in `policy.diff`).

Tables for people by default (what `get` shows of each path: `cli/listing.py`), `-o json` or
`-o yaml` for scripts. `apply -f` loads the policy files locally first, so their problems are
reported with file:line before anything is sent, and then sends every document at once: the server
applies all of them or none, as one apply set (`--set`, else named after the paths:
`cli/applysets.py`), which `--prune` and `--dry-run` act on.
"""

from __future__ import annotations

import collections
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich import markup
from rich.table import Table

from microseg import errors, policyfile
from microseg.cli import applysets, client, listing, output
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
    """A time for tables: RFC 3339 in UTC (`2026-12-07T10:00:00Z`), `-` for none."""
    return output.timestamp(epoch)


def table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """Print one table; cells are the server's text, never Rich markup (a `[k8s]` label stays)."""
    t = Table(title=markup.escape(title))
    for column in columns:
        t.add_column(column)
    for row in rows:
        t.add_row(*(markup.escape(cell) for cell in row))
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
        found = api.get(client.item_path(path, name))
        if not emit(found, fmt):
            emit(found, Format.YAML)
        return
    shown = listing.of(path)
    items: list[listing.Item] = api.get(f"/{path}", **shown.query(selector))["items"]
    if emit(items, fmt):
        return
    table(f"{path} ({len(items)})", list(shown.headers), shown.rows(api, items))


def apply(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Option("-f", "--file", help="policy file or directory (repeatable)")],
    *,
    apply_set: Annotated[
        str | None,
        typer.Option(
            "--set",
            "--applyset",
            metavar="NAME",
            help="name of the set these files are (default: files: and the paths as given); "
            "--prune deletes only this set's objects",
        ),
    ] = None,
    prune: Annotated[
        bool, typer.Option("--prune", help="delete this set's objects that the files no longer hold")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="ask the server what would change and the draft diff; change nothing"),
    ] = False,
    fmt: Out = Format.TABLE,
) -> None:
    """Create or merge objects from policy files as one apply set (policy kinds go into the draft).

    Workloads are merged: the files own the labels, attributes and fields they declare; what agents
    report and what the files never declared stay."""
    try:
        name = applysets.checked(apply_set) if apply_set is not None else applysets.default_name(files)
    except ValueError as exc:
        raise errors.UserError(str(exc)) from None
    est = policyfile.load(files)
    body = {"documents": dumper.documents(est), "applySet": name, "prune": prune, "dryRun": dry_run}
    try:
        result = connect(ctx).post("/apply", body)
    except client.ApiError as exc:  # the objects it names, with the file and line they came from
        raise client.located(exc, files) from None
    first = output.first_start(est.workloads)  # from the files: a ModeScope on the server may differ
    if not emit({**result, "firstStart": first}, fmt):
        print_applied(result)
        output.print_first_start(first)


def print_applied(result: dict[str, Any]) -> None:
    """What `POST /apply` created, updated and pruned (or would, in a dry run), what it did not
    take, and where policy changes went."""
    con, dry = output.console, bool(result.get("dryRun"))
    verbs = {"created": "created", "updated": "updated", "pruned": "deleted (pruned)"}
    for bucket, verb in verbs.items():
        for ref in result.get(bucket, []):
            con.print(markup.escape(f"{ref} {'would be ' + verb if dry else verb}"))
    for ref, before in (result.get("adopted") or {}).items():
        con.print(markup.escape(f"{ref} taken over from apply set {before}"))
    for c in result.get("conflicts", []):
        con.print(markup.escape(f"warning: {c['object']} {c['field']}: {c['message']}"))
    counts = {bucket: len(result.get(bucket, [])) for bucket in ("created", "updated", "unchanged", "pruned")}
    summary = "{created} created, {updated} updated, {unchanged} unchanged, {pruned} pruned".format(**counts)
    if result.get("applySet"):
        summary += f" (apply set {result['applySet']})"
    con.print(markup.escape(summary))
    if dry:
        print_diff(result["diff"], as_json=False)
        con.print("dry run: nothing changed")
    else:
        con.print("policy changes are in the draft: `microseg diff`, then `microseg provision -m NOTE`")


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
    api = connect(ctx)
    body = {"level": level, "reason": reason}
    found = api.post(client.item_path("workloads", workload, "quarantine"), body)
    if not emit(found, fmt):
        output.console.print(f"{workload} quarantined ({level})")
    if not has_agent(api, workload):
        output.err_console.print(
            f"[yellow]warning[/]: {markup.escape(workload)} has no agent: nothing enforces this "
            "quarantine until one enrolls (isolate it at the network, or install the agent)"
        )


def has_agent(api: client.Client, workload: str) -> bool:
    """Whether an agent that is not revoked serves `workload` (offline ones still enforce: fail-static)."""
    from microseg.server import responses  # here, not at the top: pydantic is no startup cost

    listed = map(responses.Agent.model_validate, api.get("/agents")["items"])
    return any(a.workload == workload and not a.revoked for a in listed)


def release(
    ctx: typer.Context,
    workload: Annotated[str, typer.Argument(help="workload to release")],
    reason: Annotated[str, typer.Option(help="why (kept in the audit log and the event)")] = "",
    fmt: Out = Format.TABLE,
) -> None:
    """End a workload's quarantine: its labels and mode become those from before it."""
    found = connect(ctx).post(client.item_path("workloads", workload, "release"), {"reason": reason})
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
    limit: Annotated[int, typer.Option(min=1, help="how many, the newest")] = 100,
    fmt: Out = Format.TABLE,
) -> None:
    """Events the server recorded, newest first (as the console lists them)."""
    items = newest(connect(ctx), "/events", limit, kind=kind, workload=workload)
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
    limit: Annotated[int, typer.Option(min=1, help="how many, the newest")] = 100,
    fmt: Out = Format.TABLE,
) -> None:
    """The audit log, newest first (as the console lists it): who changed what, when (the diff is
    in -o json / yaml)."""
    items = newest(connect(ctx), "/audit", limit, target=target_prefix, actor=actor)
    if not emit(items, fmt):
        table(
            "audit",
            ["ID", "WHEN", "ACTOR", "ACTION", "TARGET"],
            [[str(r["id"]), when(r["at"]), r["actor"], r["action"], r["target"]] for r in items],
        )


PAGE = 10_000
"""Records per request when reading an append-only log (the server's largest page)."""


def newest(api: client.Client, path: str, limit: int, **query: Any) -> list[dict[str, Any]]:
    """The newest `limit` records of an append-only log, newest first, in every output format.
    The API lists oldest first and pages forward by id, so the whole log is read."""
    kept: collections.deque[dict[str, Any]] = collections.deque(maxlen=limit)
    after = 0
    while True:
        page = api.get(path, after=after, limit=PAGE, **query)["items"]
        kept.extend(page)
        if len(page) < PAGE:
            return list(reversed(kept))
        after = page[-1]["id"]


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
        who = checking.get("/whoami")
    finally:
        checking.close()
    path = client.config_path(config)
    client.write_config(path, server, token)
    output.console.print(f"saved server {server} in {path}")
    output.console.print(f"logged in as {who['name']} with role {who['role']}", markup=False)


def draft_diff(ctx: typer.Context, as_json: bool) -> None:
    """`microseg diff` without files: the draft against the active version, on the server."""
    print_diff(connect(ctx).get("/draft/diff"), as_json)


def print_diff(diff: dict[str, Any], as_json: bool) -> None:
    """A server diff: objects changed, the reachability it changes, the invariants it would break
    (before anyone provisions and meets the 409) and the linter's warnings."""
    if as_json:
        output.emit_json(diff)
        return
    con = output.console
    for kind, refs in diff["objects"].items():
        for ref in refs:
            con.print(f"{ref} {kind}")
    print_reachability(diff["reachability"])
    print_invariants(diff.get("invariants", {}))
    print_lint(diff.get("warnings", []), diff.get("warningsTotal", 0))


def print_reachability(reach: dict[str, Any]) -> None:
    """Workload pairs and ports that gain or lose access."""
    if not reach["total"]:
        output.console.print("no reachability change between known workloads")
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
    output.console.print(
        f"{reach['gained']} gained, {reach['lost']} lost"
        + (" (list truncated)" if reach["truncated"] else "")
    )


def print_invariants(found: dict[str, Any]) -> None:
    """Each violation, marked by whether provisioning refuses for it; then what provision will do."""
    violations, refusing = found.get("violations", []), found.get("refusing", 0)
    for v in violations:
        mark = "[red]broken[/]"
        if v["excepted"] or v["quarantine"]:  # listed, but no reason for provision to refuse
            mark = "[yellow]excepted[/]" if v["excepted"] else "[yellow]quarantine[/]"
        ends = f"{', '.join(v['sources'][:3])} -> {', '.join(v['destinations'][:3])} on {v['port']}"
        said = f"invariant {v['invariant']} ({v['statement']}): {ends} allowed by {v['rule']}"
        output.console.print(f"{mark}: {markup.escape(said)}")
    if refusing:
        output.console.print(
            f"[red]provision will refuse[/]: {output.plural(refusing, 'invariant violation')} "
            "(fix the draft, or provision with --force, which is audited)"
        )
    elif found.get("declared"):
        output.console.print(f"[green]kept[/]: {output.plural(found['declared'], 'invariant')}")


def print_lint(warnings: list[dict[str, Any]], total: int) -> None:
    """The linter's warnings about the new side, one line each."""
    for w in warnings:
        hint = f" ({w['hint']})" if w["hint"] else ""
        said = markup.escape(f"{w['object']} {w['name']}: {w['message']}{hint} [{w['kind']}]")
        output.console.print(f"[yellow]warning[/]: {said}")
    if total > len(warnings):
        output.console.print(f"… and {total - len(warnings)} more warnings (-o json lists {len(warnings)})")

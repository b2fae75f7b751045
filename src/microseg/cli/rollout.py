"""`microseg rollout status|readiness|promote`: per-scope modes, promoted when the scope is ready."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from microseg.cli import output
from microseg.cli.remote import Format, Out, connect, emit

rollout_app = typer.Typer(name="rollout", help="Per-scope rollout: visibility -> alert -> enforce.")
Scope = Annotated[str, typer.Option("--scope", help="label selector of the scope, e.g. env=prod,app=crm")]
Since = Annotated[str | None, typer.Option("--since", help="window of flows: 24h, 7d (default 7d)")]
MinCoverage = Annotated[float, typer.Option(help="percent of observed connections the policy must allow")]
MaxWouldBlock = Annotated[int, typer.Option(help="would-block connections the window may hold")]
MinInSync = Annotated[float, typer.Option(help="percent of the scope's agents in sync")]


@rollout_app.command("status")
@output.reporting
def status(ctx: typer.Context, fmt: Out = Format.TABLE) -> None:
    """The rollout scopes and their modes."""
    found = connect(ctx).get("/rollout")
    if not emit(found, fmt):
        for item in found["items"]:
            output.console.print(f"{item['scope']:40} {item['mode']}", highlight=False)


@rollout_app.command("readiness")
@output.reporting
def readiness(
    ctx: typer.Context,
    *,
    scope: Scope,
    since: Since = None,
    min_coverage: MinCoverage = 99.0,
    max_would_block: MaxWouldBlock = 0,
    min_in_sync: MinInSync = 100.0,
    fmt: Out = Format.TABLE,
) -> None:
    """How ready a scope is to enforce: would-block flows, coverage, agents in sync."""
    params = {
        "scope": scope,
        "since": since,
        "minCoverage": min_coverage,
        "maxWouldBlock": max_would_block,
        "minInSync": min_in_sync,
    }
    found = connect(ctx).get("/rollout/readiness", **{k: v for k, v in params.items() if v is not None})
    if not emit(found, fmt):
        print_report(found)


def print_report(report: dict[str, Any]) -> None:
    """The checks, then what is not covered yet."""
    modes = ", ".join(f"{n} {m}" for m, n in report["modes"].items() if n)
    output.console.print(
        f"scope {report['scope']}: {output.plural(report['workloads'], 'workload')} ({modes})",
        highlight=False,
    )
    for name, check in report["checks"].items():
        mark = "[green]ok[/]  " if check["ok"] else "[red]not[/] "
        output.console.print(f"  {mark} {name:13} {check['value']} (limit {check['limit']})", highlight=False)
    for item in report["uncovered"]:
        rule = item["verdict"]["rule"] or "default deny"
        output.console.print(f"  uncovered: {item['flow']} x{item['connections']} ({rule})", highlight=False)
    for name in report["notInSync"]:
        output.console.print(f"  agent not in sync: {name}", highlight=False)


@rollout_app.command("promote")
@output.reporting
def promote(
    ctx: typer.Context,
    *,
    scope: Scope,
    to: Annotated[str, typer.Option("--to", help="visibility, alert or enforce")],
    since: Since = None,
    force: Annotated[bool, typer.Option("--force", help="promote even when not ready (audited)")] = False,
    note: Annotated[str, typer.Option("-m", "--message", help="why")] = "",
    min_coverage: MinCoverage = 99.0,
    max_would_block: MaxWouldBlock = 0,
    min_in_sync: MinInSync = 100.0,
    fmt: Out = Format.TABLE,
) -> None:
    """Set a scope's mode; refused (exit 2, with the report) when the scope is not ready."""
    limits = {"minCoverage": min_coverage, "maxWouldBlock": max_would_block, "minInSync": min_in_sync}
    body = {"scope": scope, "to": to, "since": since, "force": force, "note": note, **limits}
    found = connect(ctx).post("/rollout/promote", body)
    if not emit(found, fmt):
        forced = " (forced: it was not ready)" if found["forced"] else ""
        output.console.print(f"{scope} is now {found['mode']}{forced}", highlight=False)
        print_report(found["readiness"])

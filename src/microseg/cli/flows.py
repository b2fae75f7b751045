"""`microseg flows`: flow summaries from the control plane (`GET /api/v1/flows/summary`), and
`microseg flows purge`: an admin drops one reporter's or one window's flow data
(`DELETE /api/v1/flows`, e.g. what a compromised agent reported).

Fed by the server's summary query, page by page; feeds people (a table) and scripts (`-o json`,
`-o yaml`). Filters go to the server as they are, so the server's answer to a bad one (a
selector that does not parse, say) is what the user sees.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from microseg.cli import output, remote

PAGE = 1000
"""Rows asked for per request."""
COLUMNS = [
    "HOUR",
    "REPORTER",
    "SOURCE",
    "DESTINATION",
    "PORT",
    "PROCESS",
    "VERDICT",
    "RULE",
    "CONNS",
    "BYTES",
    "LAST SEEN",
]


def _end(row: dict[str, Any], side: str) -> str:
    """A workload's name with its address, or the address alone for an external end."""
    name = row[f"{side}Workload"]
    return f"{name} ({row[side]})" if name else row[side]


def _cells(row: dict[str, Any]) -> list[str]:
    port = "-" if row["dport"] is None else str(row["dport"])
    return [
        remote.when(row["bucket"]),
        row["reporter"],
        _end(row, "src"),
        _end(row, "dst"),
        f"{port}/{row['proto']}",
        row["process"] or "-",
        row["verdict"],
        row["rule"] or "-",
        str(row["connections"]),
        str(row["bytes"]),
        remote.when(row["lastSeen"]),
    ]


def flows(
    ctx: typer.Context,
    *,
    since: Annotated[
        str, typer.Option(help="epoch seconds or a duration back from now: 30m, 24h, 7d")
    ] = "1h",
    until: Annotated[float | None, typer.Option(help="epoch seconds (default: now)")] = None,
    selector: Annotated[
        str | None, typer.Option("-l", "--selector", help="label selector on either end")
    ] = None,
    src: Annotated[str | None, typer.Option(help="source workload or address")] = None,
    dst: Annotated[str | None, typer.Option(help="destination workload or address")] = None,
    port: Annotated[int | None, typer.Option(help="destination port")] = None,
    proto: Annotated[str | None, typer.Option(help="tcp, udp, sctp, icmp, other")] = None,
    process: Annotated[str | None, typer.Option(help="process name or path glob, e.g. '*nginx'")] = None,
    verdict: Annotated[str | None, typer.Option(help="allowed, blocked or would-block")] = None,
    limit: Annotated[int, typer.Option(help="at most this many rows")] = 1000,
    fmt: remote.Out = remote.Format.TABLE,
) -> None:
    """Flow summaries per hour: who talked to whom, on which port, by which process, with what verdict."""
    if ctx.invoked_subcommand is not None:  # as the group's callback, `flows purge` lists nothing
        return
    api = remote.connect(ctx)
    query = {
        "since": since,
        "until": until,
        "selector": selector,
        "src": src,
        "dst": dst,
        "port": port,
        "proto": proto,
        "process": process,
        "verdict": verdict,
    }
    items: list[dict[str, Any]] = []
    after: int | None = 0
    while after is not None and len(items) < limit:
        found = api.get("/flows/summary", **query, limit=min(PAGE, limit - len(items)), **{"continue": after})
        items += found["items"]
        after = found["continue"]
    if not remote.emit(items, fmt):
        remote.table(f"flows ({len(items)})", COLUMNS, [_cells(r) for r in items])


flows_app = typer.Typer(name="flows", help="Flow summaries; purge a reporter's flow data.")
flows_app.callback(invoke_without_command=True)(output.reporting(flows))


@flows_app.command("purge")
@output.reporting
def purge(
    ctx: typer.Context,
    *,
    reporter: Annotated[str | None, typer.Option(help="the reporting workload (its agent's data)")] = None,
    since: Annotated[str | None, typer.Option(help="epoch seconds or a duration back: 24h, 7d")] = None,
    until: Annotated[float | None, typer.Option(help="epoch seconds")] = None,
    fmt: remote.Out = remote.Format.TABLE,
) -> None:
    """Drop flow summaries, raw batches and rule-counter hours of a reporter and/or a window (admin;
    audited). Give at least one of --reporter, --since, --until."""
    found = remote.connect(ctx).call(
        "DELETE", "/flows", params={"reporter": reporter, "since": since, "until": until}
    )
    if not remote.emit(found, fmt):
        n = found["dropped"]
        dropped = [
            output.plural(n["summaries"], "summary row"),
            output.plural(n["batches"], "batch", "batches"),
            output.plural(n["counterHours"], "counter hour"),
        ]
        output.console.print("dropped " + ", ".join(dropped), highlight=False)

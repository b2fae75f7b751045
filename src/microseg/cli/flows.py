"""`microseg flows`: flow summaries from the control plane (`GET /api/v1/flows/summary`).

Fed by the server's summary query, page by page; feeds people (a table) and scripts (`-o json`,
`-o yaml`). Filters go to the server as they are, so the server's answer to a bad one (a
selector that does not parse, say) is what the user sees.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from microseg.cli import remote

PAGE = 1000
"""Rows asked for per request."""
COLUMNS = ["HOUR", "REPORTER", "SOURCE", "DESTINATION", "PORT", "PROCESS", "VERDICT", "RULE", "CONNS",
           "BYTES", "LAST SEEN"]  # fmt: skip


def _end(row: dict[str, Any], side: str) -> str:
    """A workload's name with its address, or the address alone for an external end."""
    name = row[f"{side}Workload"]
    return f"{name} ({row[side]})" if name else row[side]


def _cells(row: dict[str, Any]) -> list[str]:
    port = "-" if row["dport"] is None else str(row["dport"])
    return [remote.when(row["bucket"]), row["reporter"], _end(row, "src"), _end(row, "dst"),
            f"{port}/{row['proto']}", row["process"] or "-", row["verdict"], row["rule"] or "-",
            str(row["connections"]), str(row["bytes"]), remote.when(row["lastSeen"])]  # fmt: skip


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
    api = remote.connect(ctx)
    query = {"since": since, "until": until, "selector": selector, "src": src, "dst": dst, "port": port,
             "proto": proto, "process": process, "verdict": verdict}  # fmt: skip
    items: list[dict[str, Any]] = []
    after: int | None = 0
    while after is not None and len(items) < limit:
        found = api.get("/flows/summary", **query, limit=min(PAGE, limit - len(items)), **{"continue": after})
        items += found["items"]
        after = found["continue"]
    if not remote.emit(items, fmt):
        remote.table(f"flows ({len(items)})", COLUMNS, [_cells(r) for r in items])

"""`microseg explain`: one flow through the one evaluator, with the reason for its verdict.

`--port` goes through `cli.ports` (the one parser); a range or a service is explained port by
port, and consecutive ports with the same verdict print as one run (`8000-8079/tcp`), so the
answer is exact for every port asked about and still short (`analytics.explaining`). `--expect`
turns it into a CI check. With `--server` the control plane's `POST /explain` answers instead of
local files, under its active version, its draft or any version (`--version`), through the same
code, so the output and the exit codes are the same.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import typer

from microseg import errors
from microseg.analytics import explaining
from microseg.cli import client, loading, output, ports, remote
from microseg.engine import engine, reachability
from microseg.model import verdicts


class Expectation(StrEnum):
    """Outcomes `--expect` can require (as `verdict.outcome` spells them)."""

    ALLOWED = "allowed"
    BLOCKED = "blocked"
    WOULD_BLOCK = "would-block"


Flow = explaining.Flow
Run = tuple[dict[str, Any], dict[str, Any]]
"""Consecutive ports with one verdict: `{"from", "to", "port"}` (its `port` the run) and the
verdict as `Verdict.to_dict` (and the API) spell it."""


def explain(  # Typer options, all by keyword
    ctx: typer.Context,
    *,
    source: Annotated[str, typer.Option("--from", metavar="WORKLOAD|IP", help="workload name or IP address")],
    destination: Annotated[
        str, typer.Option("--to", metavar="WORKLOAD|IP", help="workload name or IP address")
    ],
    port: Annotated[str, typer.Option("--port", help=ports.HELP)],
    files: output.Files = None,
    example: loading.Example = False,
    server: Annotated[
        bool, typer.Option("--server", help="ask the control plane (microseg login) instead of files")
    ] = False,
    version: Annotated[
        str | None,
        typer.Option(
            "--version", metavar="active|draft|N", help="with --server: which policy (default: active)"
        ),
    ] = None,
    process: Annotated[str | None, typer.Option(help="serving process (name or path), when known")] = None,
    client_process: Annotated[str | None, typer.Option(help="connecting process, when known")] = None,
    at: Annotated[datetime | None, typer.Option(help="evaluate at this time (default: now)")] = None,
    expect: Annotated[
        Expectation | None,
        typer.Option("--expect", help="exit 1 unless every port asked about has this outcome"),
    ] = None,
    fmt: output.Output = output.Format.TABLE,
) -> None:
    """Explain the verdict for a new connection: decision, outcome, tier, rule, matched labels."""
    flow = Flow(source, destination, port, process, client_process, at)
    if server:
        if files or example:
            raise errors.UserError("--server asks the control plane: give it no -f or --example")
        runs = server_runs(remote.connect(ctx), flow, version_ref(version))
    else:
        if version is not None:
            raise errors.UserError("--version names a version on the server: add --server")
        runs = explain_runs(loading.build(files, example=example), flow)
    met = expect is None or all(v["outcome"] == expect.value for _, v in runs)
    if fmt is output.Format.JSON:
        output.emit_json(json_answer(runs, expect, met))
    else:
        for summary, verdict in runs:
            print_verdict(summary, verdict)
        if not met:
            output.err_console.print(f"[bold red]expected[/] {expect}: not every port has that outcome")
    if not met:
        raise typer.Exit(1)


def version_ref(given: str | None) -> str:
    """`active` (the default), `draft`, or a version number (`3` or `v3`) as the API names it."""
    ref = (given or "active").strip().lower()
    if ref in ("active", "draft") or ref.removeprefix("v").isdigit():
        return ref.removeprefix("v") if ref.startswith("v") else ref
    raise errors.UserError(f"--version {given!r}: expected active, draft or a version number (3 or v3)")


def server_runs(api: client.Client, flow: Flow, version: str) -> list[Run]:
    """The runs the server's `POST /explain` answers for `flow` under `version`."""
    body: dict[str, Any] = {
        "from": flow.source,
        "to": flow.destination,
        "port": flow.port,
        "version": version,
    }
    if flow.process is not None:
        body["process"] = flow.process
    if flow.client_process is not None:
        body["clientProcess"] = flow.client_process
    if flow.at is not None:  # a time without a zone is local time, as on files
        body["at"] = flow.at.astimezone().isoformat()
    found = api.post("/explain", body)
    return [
        ({"from": found["from"], "to": found["to"], "port": v["port"]}, v["verdict"])
        for v in found["verdicts"]
    ]


def explain_flow(eng: engine.PolicyEngine, flow: Flow) -> tuple[verdicts.Verdict, dict[str, Any]]:
    """Evaluate one flow on exactly one port; also return it in printable form."""
    run = explaining.evaluate(eng, flow, reachability.parse_probe(flow.port))
    return run.verdict, run.summary()


def explain_runs(eng: engine.PolicyEngine, flow: Flow) -> list[Run]:
    """Evaluate a flow on every port its `--port` names (estate services included), in runs."""
    found = explaining.runs(eng, flow, ports.probes(flow.port, eng.estate))
    return [(run.summary(), run.verdict.to_dict()) for run in found]


def json_answer(runs: list[Run], expect: Expectation | None, met: bool) -> dict[str, Any]:
    """`flow` and `verdict` when one verdict covers every port asked about; always `verdicts`, one
    per run; `expected` and `met` with `--expect`."""
    answer: dict[str, Any] = {
        "flow": runs[0][0] if len(runs) == 1 else {**runs[0][0], "port": None},
        "verdicts": [{"port": s["port"], "verdict": v} for s, v in runs],
    }
    if len(runs) == 1:
        answer["verdict"] = runs[0][1]
    if expect is not None:
        answer |= {"expected": expect.value, "met": met}
    return answer


_STYLE = {"allowed": "green", "would-block": "yellow", "blocked": "bold red"}


def print_verdict(summary: dict[str, Any], verdict: verdicts.Verdict | dict[str, Any]) -> None:
    """The human form of a verdict (a Verdict, or its JSON form as the API answers it)."""
    v = verdict.to_dict() if isinstance(verdict, verdicts.Verdict) else verdict
    con = output.console
    style = _STYLE[v["outcome"]]
    con.print(f"{summary['from']} -> {summary['to']} on {summary['port']}", markup=False)
    con.print(f"  outcome   [{style}]{v['outcome']}[/] (policy says {v['decision']})")
    con.print(f"  tier      {v['tier'] or '(none: default deny)'}", markup=False)
    con.print(f"  rule      {v['rule'] or '(none)'}", markup=False)
    con.print(f"  because   {v['reason']}", markup=False)
    if v["sourceLabelsMatched"] or v["destinationLabelsMatched"]:
        src = ", ".join(v["sourceLabelsMatched"]) or "-"
        dst = ", ".join(v["destinationLabelsMatched"]) or "-"
        con.print(f"  matched   source {src}; destination {dst}", markup=False)
    modes = (m or "unmanaged" for m in (v["sourceMode"], v["destinationMode"]))
    con.print("  modes     source {}, destination {}".format(*modes), markup=False)
    for note in v["notes"]:
        con.print(f"  note      {note}", markup=False)

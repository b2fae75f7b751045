"""`microseg explain`: one flow through the one evaluator, with the reason for its verdict.

`--port` goes through `cli.ports` (the one parser); a range or a service is explained port by
port, and consecutive ports with the same verdict print as one run (`8000-8079/tcp`), so the
answer is exact for every port asked about and still short. `--expect` turns it into a CI check.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import typer

from microseg.cli import loading, output, ports
from microseg.engine import engine, reachability
from microseg.model import services, verdicts


class Expectation(StrEnum):
    """Outcomes `--expect` can require (as `verdict.outcome` spells them)."""

    ALLOWED = "allowed"
    BLOCKED = "blocked"
    WOULD_BLOCK = "would-block"


def explain(
    *,
    source: Annotated[str, typer.Option("--from", help="workload name or IP address")],
    destination: Annotated[str, typer.Option("--to", help="workload name or IP address")],
    port: Annotated[str, typer.Option("--port", help=ports.HELP)],
    files: output.Files = None,
    example: loading.Example = False,
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
    eng = loading.build(files, example=example)
    flow = Flow(source, destination, port, process, client_process, at)
    runs = explain_runs(eng, flow)
    met = expect is None or all(v.outcome.value == expect.value for _, v in runs)
    if fmt is output.Format.JSON:
        output.emit_json(json_answer(runs, expect, met))
    else:
        for summary, verdict in runs:
            print_verdict(summary, verdict)
        if not met:
            output.err_console.print(f"[bold red]expected[/] {expect}: not every port has that outcome")
    if not met:
        raise typer.Exit(1)


@dataclass(frozen=True)
class Flow:
    """A flow as the CLI spells it."""

    source: str
    destination: str
    port: str
    process: str | None = None
    client_process: str | None = None
    at: datetime | None = None


Run = tuple[dict[str, Any], verdicts.Verdict]
"""Consecutive probes with one verdict: the flow in printable form (its `port` the run), the verdict."""


def explain_flow(eng: engine.PolicyEngine, flow: Flow) -> tuple[verdicts.Verdict, dict[str, Any]]:
    """Evaluate one flow on exactly one port; also return it in printable form."""
    probe = reachability.parse_probe(flow.port)
    summary, verdict = _evaluate(eng, flow, probe)
    return verdict, summary


def explain_runs(eng: engine.PolicyEngine, flow: Flow) -> list[Run]:
    """Evaluate a flow on every port its `--port` names (estate services included), in runs."""
    runs: list[tuple[list[reachability.Probe], dict[str, Any], verdicts.Verdict]] = []
    for probe in ports.probes(flow.port, eng.estate):
        summary, verdict = _evaluate(eng, flow, probe)
        last = runs[-1] if runs else None
        if last and _follows(last[0][-1], probe) and last[2].to_dict() == verdict.to_dict():
            last[0].append(probe)
        else:
            runs.append(([probe], summary, verdict))
    return [({**summary, "port": _run_text(probes)}, verdict) for probes, summary, verdict in runs]


def json_answer(runs: list[Run], expect: Expectation | None, met: bool) -> dict[str, Any]:
    """`flow` and `verdict` when one verdict covers every port asked about; always `verdicts`, one
    per run; `expected` and `met` with `--expect`."""
    answer: dict[str, Any] = {
        "flow": runs[0][0] if len(runs) == 1 else {**runs[0][0], "port": None},
        "verdicts": [{"port": s["port"], "verdict": v.to_dict()} for s, v in runs],
    }
    if len(runs) == 1:
        answer["verdict"] = runs[0][1].to_dict()
    if expect is not None:
        answer |= {"expected": expect.value, "met": met}
    return answer


def _evaluate(eng: engine.PolicyEngine, flow: Flow, probe: reachability.Probe) -> Run:
    proto, port = probe
    src, dst = eng.endpoint(flow.source), eng.endpoint(flow.destination)
    verdict = eng.evaluate(
        src, dst, port, proto, process=flow.process, client_process=flow.client_process, at=flow.at
    )
    return {"from": str(src), "to": str(dst), "port": reachability.probe_text(probe)}, verdict


def _follows(before: reachability.Probe, probe: reachability.Probe) -> bool:
    return before[0] is probe[0] and before[1] is not None and probe[1] == before[1] + 1


def _run_text(probes: list[reachability.Probe]) -> str:
    (proto, first), (_, last) = probes[0], probes[-1]
    if first is None or last is None or first == last:
        return reachability.probe_text(probes[0])
    return f"{services.PortRange(first, last)}/{proto.value}"


_STYLE = {"allowed": "green", "would-block": "yellow", "blocked": "bold red"}


def print_verdict(summary: dict[str, Any], verdict: verdicts.Verdict) -> None:
    """The human form of a verdict."""
    con = output.console
    style = _STYLE[verdict.outcome.value]
    con.print(f"{summary['from']} -> {summary['to']} on {summary['port']}")
    con.print(f"  outcome   [{style}]{verdict.outcome.value}[/] (policy says {verdict.decision.value})")
    con.print(f"  tier      {verdict.tier or '(none: default deny)'}")
    con.print(f"  rule      {verdict.rule or '(none)'}")
    con.print(f"  because   {verdict.reason}")
    if verdict.source_labels_matched or verdict.destination_labels_matched:
        src = ", ".join(verdict.source_labels_matched) or "-"
        dst = ", ".join(verdict.destination_labels_matched) or "-"
        con.print(f"  matched   source {src}; destination {dst}")
    modes = (m.value if m else "unmanaged" for m in (verdict.source_mode, verdict.destination_mode))
    con.print("  modes     source {}, destination {}".format(*modes))
    for note in verdict.notes:
        con.print(f"  note      {note}")

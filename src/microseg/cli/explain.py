"""`microseg explain`: one flow through the one evaluator, with the reason for its verdict."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import typer

from microseg.cli import loading, output
from microseg.engine import engine, reachability
from microseg.model import verdicts


def explain(
    *,
    source: Annotated[str, typer.Option("--from", help="workload name or IP address")],
    destination: Annotated[str, typer.Option("--to", help="workload name or IP address")],
    port: Annotated[str, typer.Option("--port", help="PORT/PROTO, e.g. 3306/tcp, 53/udp, icmp")],
    files: output.Files = None,
    process: Annotated[str | None, typer.Option(help="serving process (name or path), when known")] = None,
    client_process: Annotated[str | None, typer.Option(help="connecting process, when known")] = None,
    at: Annotated[datetime | None, typer.Option(help="evaluate at this time (default: now)")] = None,
    fmt: output.Output = output.Format.TABLE,
) -> None:
    """Explain the verdict for a new connection: decision, outcome, tier, rule, matched labels."""
    eng = loading.build(files)
    flow = Flow(source, destination, port, process, client_process, at)
    verdict, summary = explain_flow(eng, flow)
    if fmt is output.Format.JSON:
        output.emit_json({"flow": summary, "verdict": verdict.to_dict()})
        return
    print_verdict(summary, verdict)


@dataclass(frozen=True)
class Flow:
    """A flow as the CLI spells it."""

    source: str
    destination: str
    port: str
    process: str | None = None
    client_process: str | None = None
    at: datetime | None = None


def explain_flow(eng: engine.PolicyEngine, flow: Flow) -> tuple[verdicts.Verdict, dict[str, Any]]:
    """Evaluate one flow; also return it in printable form."""
    proto, port = reachability.parse_probe(flow.port)
    src, dst = eng.endpoint(flow.source), eng.endpoint(flow.destination)
    verdict = eng.evaluate(
        src, dst, port, proto, process=flow.process, client_process=flow.client_process, at=flow.at
    )
    summary = {"from": str(src), "to": str(dst), "port": reachability.probe_text((proto, port))}
    return verdict, summary


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

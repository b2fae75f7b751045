"""`microseg k8s ...`: NetworkPolicy reachability of manifests, pods as workloads, export."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from microseg import errors
from microseg.cli import output
from microseg.k8s import manifests, reachability
from microseg.model import services

Manifests = Annotated[
    list[Path], typer.Option("-f", "--file", help="manifest file or directory (repeatable; YAML or JSON)")
]
DETAIL_LIMIT = 400
"""Connections listed one by one in table output; beyond, only the summary (use -o json)."""


def parse_probe(text: str) -> reachability.Probe:
    """`80`, `80/TCP`, `53/udp` -> a probe (TCP when no protocol is given)."""
    number, _, proto = text.partition("/")
    try:
        port = int(number)
    except ValueError:
        raise errors.ValidationError(f"--port {text!r}: expected PORT[/TCP|UDP|SCTP]") from None
    if not 1 <= port <= 65535:
        raise errors.ValidationError(f"--port {text!r}: port must be 1-65535")
    protocol = (proto or "tcp").lower()
    if protocol not in ("tcp", "udp", "sctp"):
        raise errors.ValidationError(f"--port {text!r}: protocol must be TCP, UDP or SCTP")
    return reachability.Probe(port, services.Protocol(protocol))


def k8s_reachability(
    files: Manifests,
    ports: Annotated[
        list[str] | None,
        typer.Option(
            "--port",
            help="PORT/PROTO to probe on every pod (repeatable); default: each destination's container ports",
        ),
    ] = None,
    fmt: output.Output = output.Format.TABLE,
) -> None:
    """What the manifests' NetworkPolicies allow between every ordered pair of distinct pods."""
    probes = [parse_probe(p) for p in ports] if ports else None
    found = manifests.load(files)
    result = reachability.Reachability(found, probes)
    for note in found.notes:
        output.err_console.print(f"note: {note}")
    if fmt is output.Format.JSON:
        write_json(result)
        return
    print_table(result)


def write_json(result: reachability.Reachability) -> None:
    """`{"connections": [...]}`, streamed: the output of a large cluster never sits in memory."""
    out = sys.stdout
    out.write('{"connections": [')
    first = True
    for connection in result.connections():
        out.write(("\n  " if first else ",\n  ") + json.dumps(connection.to_dict()))
        first = False
    out.write("\n]}\n" if not first else "]}\n")


def print_table(result: reachability.Reachability) -> None:
    """A summary per namespace pair, then each connection when there are few."""
    total, allowed = result.count()
    pods = result.pods
    output.console.print(
        f"{len(pods)} pods in {len({p.namespace for p in pods})} namespaces, "
        f"{len(result.index.cluster.policies)} NetworkPolicies: {allowed} of {total} connections allowed"
    )
    summary: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    open_ports: dict[tuple[str, str], set[str]] = defaultdict(set)
    for s, d, probe, ok in result.verdicts():
        key = (pods[s].namespace, pods[d].namespace)
        summary[key][0] += 1
        if ok:
            summary[key][1] += 1
            open_ports[key].add(str(probe))
    table = Table(title="By namespace pair")
    for column in ("from namespace", "to namespace", "allowed", "blocked", "ports allowed somewhere"):
        table.add_column(column)
    for (src, dst), (count, allowed_here) in sorted(summary.items()):
        ports_here = ", ".join(sorted(open_ports[(src, dst)])) or "-"
        table.add_row(src, dst, str(allowed_here), str(count - allowed_here), ports_here)
    output.console.print(table)
    if total > DETAIL_LIMIT:
        output.console.print(f"{total} connections: too many to list here; use -o json for each one")
        return
    detail = Table(title="Connections")
    for column in ("from", "to", "port", "verdict", "reason"):
        detail.add_column(column)
    for c in result.connections():
        verdict = "[green]allowed[/]" if c.allowed else "[red]blocked[/]"
        detail.add_row(c.source.ref, c.destination.ref, str(c.probe), verdict, c.reason)
    output.console.print(detail)

"""`microseg map`, `microseg simulate` and `microseg recommend`: the analytics of the control plane
(`/api/v1/flows/map|simulate|recommend`) over the stored flow summaries.

Fed by the server's answers; feeds people (tables, DOT for Graphviz, Markdown for a pull-request
comment) and scripts (`-o json`). The analyses run on the server, next to the flows and engines.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated, Any

import typer
import yaml

from microseg.cli import output, remote

Since = Annotated[str | None, typer.Option(help="epoch seconds or a duration back from now: 30m, 24h, 7d")]
GroupBy = Annotated[str, typer.Option("--group-by", help="label keys, comma separated, e.g. app,role")]


class MapFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    DOT = "dot"


class SimFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    MD = "md"


def map_(
    ctx: typer.Context,
    *,
    group_by: GroupBy = "",
    within: Annotated[str, typer.Option(help="label keys that scope groups, e.g. env")] = "",
    since: Since = None,
    fmt: Annotated[MapFormat, typer.Option("-o", "--output", help="table, json or dot")] = MapFormat.TABLE,
) -> None:
    """The dependency map from observed flows: edges with ports, processes and verdicts (active, draft)."""
    api = remote.connect(ctx)
    query = {"groupBy": group_by, "within": within, "since": since}
    if fmt is MapFormat.DOT:
        sys.stdout.write(api.text("/flows/map", **query, format="dot"))
        return
    graph: dict[str, Any] = api.get("/flows/map", **query)
    if fmt is MapFormat.JSON:
        output.emit_json(graph)
        return
    rows = [
        [
            e["source"],
            e["destination"],
            ", ".join(_port(p) for p in e["ports"]),
            str(e["connections"]),
            e["verdict"],
            e["draftVerdict"] or "-",
        ]
        for e in graph["edges"]
    ]
    remote.table(
        f"map ({output.plural(len(graph['nodes']), 'node')}, {output.plural(len(rows), 'edge')})",
        ["FROM", "TO", "PORTS", "CONNS", "ACTIVE", "DRAFT"],
        rows,
    )


def _port(use: dict[str, Any]) -> str:
    return use["protocol"] if use["port"] is None else f"{use['port']}/{use['protocol']}"


def simulate(
    ctx: typer.Context,
    *,
    since: Since = None,
    fmt: Annotated[SimFormat, typer.Option("-o", "--output", help="table, json or md")] = SimFormat.TABLE,
) -> None:
    """Replay the stored flows against the draft: what it would newly block or allow, by rule."""
    api = remote.connect(ctx)
    if fmt is SimFormat.JSON:
        output.emit_json(api.get("/flows/simulate", since=since))
        return
    form = "markdown" if fmt is SimFormat.MD else "table"
    sys.stdout.write(api.text("/flows/simulate", since=since, format=form))


def recommend(
    ctx: typer.Context,
    *,
    group_by: GroupBy,
    since: Since = None,
    accept: Annotated[bool, typer.Option("--accept", help="write the proposed rules into the draft")] = False,
    fmt: remote.Out = remote.Format.TABLE,
) -> None:
    """Least-privilege allow rules for the observed flows, with their coverage; --accept drafts them."""
    api = remote.connect(ctx)
    if accept:
        done = api.call("POST", "/flows/recommend/accept", params={"groupBy": group_by, "since": since})
        if not remote.emit(done, fmt):
            buckets = ("created", "updated", "unchanged")
            applied = sum(len(done["applied"][k]) for k in buckets) if done["applied"] else 0
            output.console.print(
                f"{output.plural(applied, 'object')} written into the draft; coverage {done['coverage']} %"
            )
        return
    found: dict[str, Any] = api.get("/flows/recommend", groupBy=group_by, since=since)
    if remote.emit(found, fmt):
        return
    sys.stdout.write(recommendation_yaml(found))


def recommendation_yaml(found: dict[str, Any]) -> str:
    """The proposed documents as a policy file a person reviews, edits and commits (or `--accept`s),
    headed by comments with the coverage and what was left out."""
    head = [f"# recommended rules: coverage {found['coverage']} % of observed flows"]
    if found.get("leftOut"):
        head.append(f"# {output.plural(len(found['leftOut']), 'flow')} left out (see -o json for why)")
    head.append("# save as a policy file and `microseg apply -f` it, or draft it with --accept")
    body = yaml.safe_dump_all(found["documents"], sort_keys=False, explicit_start=True)
    return "\n".join(head) + "\n" + body


def rule_hits(
    ctx: typer.Context,
    *,
    since: Since = "30d",
    unused: Annotated[bool, typer.Option("--unused", help="only the rules nothing hit")] = False,
    fmt: remote.Out = remote.Format.TABLE,
) -> None:
    """Connections each rule decided in the window and its last hit; the active rules nothing hit."""
    api = remote.connect(ctx)
    found: dict[str, Any] = api.get("/flows/rule-hits", since=since)
    if remote.emit(found["unused"] if unused else found, fmt):
        return
    if not unused:
        head = ["RULE", "CONNECTIONS", "FLOWS", "COUNTER PKTS", "LAST HIT", "VERDICTS"]
        rows = [
            [
                h["rule"],
                str(h["connections"]),
                str(h["flows"]),
                str(h.get("counterPackets", 0)),
                remote.when(h["lastHit"]),
                ", ".join(h["verdicts"]),
            ]
            for h in found["rules"]
        ]
        remote.table(f"rule hits since {since}", head, rows)
    remote.table(f"unused rules ({len(found['unused'])})", ["RULE"], [[r] for r in found["unused"]])

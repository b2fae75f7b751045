"""The demo's dependency map as files: an HTML page and a PNG picture, drawn by Graphviz.

Fed by the control plane's map (`GET /flows/map`, its JSON for the edge table and its DOT for the
drawing); feeds the demo's output directory. Graphviz (`dot`) lays the graph out; without it the
page still holds the edge table and says how to get the picture. This module does not fetch
anything and does not decide verdicts: the map's JSON already carries them.
"""

from __future__ import annotations

import html
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HTML_NAME = "demo-map.html"
PNG_NAME = "demo-map.png"
DOT_NAME = "demo-map.dot"
DOT_TIMEOUT = 30.0
"""Seconds Graphviz may take for one picture (a dozen nodes take well under one)."""


@dataclass(frozen=True)
class EdgeRow:
    """One line of the map's edge table."""

    source: str
    destination: str
    ports: str
    """`3306/tcp mysqld`, comma separated."""
    connections: int
    verdict: str
    """The worst outcome under the active policy."""


@dataclass(frozen=True)
class MapFiles:
    """What was written, and what could not be."""

    html: Path
    png: Path | None
    note: str = ""


def edge_rows(graph: Mapping[str, Any]) -> list[EdgeRow]:
    """The map's edges as table rows, busiest first, node ids replaced by their labels."""
    labels = {n["id"]: node_name(n) for n in graph.get("nodes", [])}
    rows = [
        EdgeRow(
            labels.get(e["source"], e["source"]),
            labels.get(e["destination"], e["destination"]),
            ", ".join(_port_text(p) for p in e.get("ports", [])),
            int(e.get("connections", 0)),
            str(e.get("verdict", "")),
        )
        for e in graph.get("edges", [])
    ]
    return sorted(rows, key=lambda r: (-r.connections, r.source, r.destination))


def node_name(node: Mapping[str, Any]) -> str:
    """`prod/web` for the group role=web within env=prod; other nodes by their own label."""
    if node.get("kind") != "group":
        return str(node["label"])
    within = dict(part.partition("=")[::2] for part in str(node.get("cluster") or "").split(",") if part)
    values = [str(v) for k, v in (node.get("labels") or {}).items() if k not in within]
    return "/".join([*within.values(), ",".join(values)]) if values else str(node["label"])


def _port_text(port: Mapping[str, Any]) -> str:
    where = f"{port['port']}/{port['protocol']}" if port.get("port") is not None else str(port["protocol"])
    served = ",".join(port.get("processes") or [])
    return f"{where} {served}" if served else where


def write(directory: Path, dot: str, rows: Sequence[EdgeRow], title: str) -> MapFiles:
    """demo-map.dot, demo-map.png (when Graphviz is there) and demo-map.html in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / DOT_NAME).write_text(dot, encoding="utf-8")
    page = directory / HTML_NAME
    if shutil.which("dot") is None:
        note = "Graphviz is missing (apt-get install graphviz): no picture, the page holds the table only"
        page.write_text(_page(title, "", rows, note), encoding="utf-8")
        return MapFiles(page, None, note)
    png = directory / PNG_NAME
    _graphviz(dot, "png", png)
    svg = _graphviz_text(dot, "svg")
    page.write_text(_page(title, _inline_svg(svg), rows, ""), encoding="utf-8")
    return MapFiles(page, png)


def _graphviz(dot: str, kind: str, target: Path) -> None:
    subprocess.run(
        ["dot", f"-T{kind}", "-o", str(target)],
        input=dot.encode(),
        check=True,
        capture_output=True,
        timeout=DOT_TIMEOUT,
    )


def _graphviz_text(dot: str, kind: str) -> str:
    done = subprocess.run(
        ["dot", f"-T{kind}"], input=dot.encode(), check=True, capture_output=True, timeout=DOT_TIMEOUT
    )
    return done.stdout.decode("utf-8", errors="replace")


def _inline_svg(svg: str) -> str:
    # The XML prologue and DOCTYPE are not allowed inside an HTML body; the <svg> element is.
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else svg


_STYLE = """body{font-family:Helvetica,Arial,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin-top:1em}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}
.allowed{color:#080}.would-block{color:#c60}.blocked{color:#c00}.note{color:#a50}svg{max-width:100%;height:auto}"""


def _page(title: str, svg: str, rows: Sequence[EdgeRow], note: str) -> str:
    """A self-contained page: the drawing (inline SVG, no external files) and the edge table."""
    body = "".join(
        f"<tr><td>{html.escape(r.source)}</td><td>{html.escape(r.destination)}</td>"
        f"<td>{html.escape(r.ports)}</td><td>{r.connections}</td>"
        f'<td class="{html.escape(r.verdict)}">{html.escape(r.verdict)}</td></tr>'
        for r in rows
    )
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>',
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p>Edges are green when the active policy allows them, orange when it would block them, "
        "red when blocked; dashed when the draft decides otherwise.</p>",
        f'<p class="note">{html.escape(note)}</p>' if note else "",
        svg,
        "<table><tr><th>from</th><th>to</th><th>ports (serving process)</th><th>connections</th>"
        f"<th>active policy</th></tr>{body}</table>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"

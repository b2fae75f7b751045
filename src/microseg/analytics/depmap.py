"""The dependency map: who talks to whom, on which ports, and what policy says about it.

Fed by summary rows (through `flowset.flow_set`, which deduplicates the two reports of a connection
and sums its hourly buckets: the map only adds flows up) and by the active engine (and optionally
the draft engine): every flow gets its verdict under each from the one verdict function. Feeds
the API's graph JSON and the CLI's printout and Graphviz DOT.

Nodes are workloads, or label groups when group-by keys are given (`app,role`, optionally `within`
`env`, which also clusters the DOT drawing); IP lists and external addresses are nodes too, never
hidden. An edge joins two nodes and lists every port seen, with processes, counts and outcome
counts (allowed / would-block / blocked, weighted by connections). This module does not lay the
graph out and does not filter it; that is for the viewer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from microseg.analytics import collecting, flowset
from microseg.engine import engine as engine_mod
from microseg.model import addresses, labels, verdicts

NO_VALUE = "(none)"
"""Group value of a workload that lacks a group-by key (it still gets a node, never dropped)."""

COLOURS = {
    verdicts.Outcome.ALLOWED: "green",
    verdicts.Outcome.WOULD_BLOCK: "orange",
    verdicts.Outcome.BLOCKED: "red",
}
DOT_PORTS_SHOWN = 6
"""Ports written on a DOT edge label before it says `+N more` (the JSON has them all)."""

_SEVERITY = (verdicts.Outcome.ALLOWED, verdicts.Outcome.WOULD_BLOCK, verdicts.Outcome.BLOCKED)
_INDEX = {outcome: index for index, outcome in enumerate(_SEVERITY)}
"""Position of each outcome in `_SEVERITY`, which is OutcomeCounts' field order."""


@dataclass(frozen=True)
class OutcomeCounts:
    """Connections per outcome."""

    allowed: int = 0
    would_block: int = 0
    blocked: int = 0

    def merged(self, other: OutcomeCounts) -> OutcomeCounts:
        """Sum of two counts."""
        return OutcomeCounts(
            self.allowed + other.allowed, self.would_block + other.would_block, self.blocked + other.blocked
        )

    @property
    def worst(self) -> verdicts.Outcome:
        """Blocked if anything was, else would-block if anything was, else allowed."""
        if self.blocked:
            return verdicts.Outcome.BLOCKED
        return verdicts.Outcome.WOULD_BLOCK if self.would_block else verdicts.Outcome.ALLOWED

    def to_json(self) -> dict[str, int]:
        """`{"allowed": n, "would-block": n, "blocked": n}`."""
        return {"allowed": self.allowed, "would-block": self.would_block, "blocked": self.blocked}


@dataclass(frozen=True)
class Node:
    """A workload, a label group, an IP list, or the external world."""

    id: str
    kind: str
    """workload | unmanaged | group | ipList | external."""
    label: str
    labels: labels.Labels
    cluster: str | None
    """The `within` values (`env=prod`), when grouping within keys."""
    members: tuple[str, ...]
    """Workload names (workloads, groups) or addresses seen (IP lists, external)."""

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "id": self.id,
            "kind": self.kind,
            "label": self.label,
            "labels": dict(self.labels),
            "cluster": self.cluster,
            "members": list(self.members),
        }


@dataclass(frozen=True)
class PortUse:
    """One destination port (and protocol) on an edge."""

    proto: str
    dport: int | None
    processes: tuple[str, ...]
    client_processes: tuple[str, ...]
    connections: int
    bytes: int
    packets: int
    active: OutcomeCounts
    draft: OutcomeCounts | None

    @property
    def text(self) -> str:
        """`443/tcp`, `icmp`."""
        return f"{self.dport}/{self.proto}" if self.dport is not None else self.proto

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "port": self.dport,
            "protocol": self.proto,
            "processes": list(self.processes),
            "clientProcesses": list(self.client_processes),
            "connections": self.connections,
            "bytes": self.bytes,
            "packets": self.packets,
            "active": self.active.to_json(),
            "draft": None if self.draft is None else self.draft.to_json(),
        }


@dataclass(frozen=True)
class Edge:
    """Traffic from one node to another, per port."""

    source: str
    destination: str
    ports: tuple[PortUse, ...]

    @property
    def connections(self) -> int:
        """All connections on the edge."""
        return sum(p.connections for p in self.ports)

    @property
    def active(self) -> OutcomeCounts:
        """Outcome counts under the active policy."""
        return _total(p.active for p in self.ports)

    @property
    def draft(self) -> OutcomeCounts | None:
        """Outcome counts under the draft, when a draft was given."""
        drafts = [p.draft for p in self.ports if p.draft is not None]
        return _total(drafts) if drafts else None

    def to_json(self) -> dict[str, Any]:
        """JSON form, with the worst outcome under each policy for colouring."""
        draft = self.draft
        return {
            "source": self.source,
            "destination": self.destination,
            "connections": self.connections,
            "verdict": self.active.worst.value,
            "draftVerdict": None if draft is None else draft.worst.value,
            "active": self.active.to_json(),
            "draft": None if draft is None else draft.to_json(),
            "ports": [p.to_json() for p in self.ports],
        }


@dataclass(frozen=True)
class Graph:
    """The dependency map."""

    group_by: tuple[str, ...]
    within: tuple[str, ...]
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    has_draft: bool
    skipped_rows: int = 0
    """Summary rows left out because they do not check out (`flowset`)."""

    def to_json(self) -> dict[str, Any]:
        """Graph JSON for the API and `-o json`."""
        return {
            "groupBy": list(self.group_by),
            "within": list(self.within),
            "hasDraft": self.has_draft,
            "nodes": [n.to_json() for n in self.nodes],
            "edges": [e.to_json() for e in self.edges],
            "skippedRows": self.skipped_rows,
        }


def _total(counts: Iterable[OutcomeCounts]) -> OutcomeCounts:
    total = OutcomeCounts()
    for c in counts:
        total = total.merged(c)
    return total


# -- building ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _PortAcc:
    """Mutable accumulator for one PortUse while the flows stream in; outcome counts are lists
    indexed like `_SEVERITY` (a new OutcomeCounts per flow and engine cost about 5 % of a map
    in an A/B over 100,000 flows)."""

    processes: set[str] = field(default_factory=set)
    clients: set[str] = field(default_factory=set)
    connections: int = 0
    bytes: int = 0
    packets: int = 0
    active: list[int] = field(default_factory=lambda: [0, 0, 0])
    draft: list[int] | None = None


@collecting.while_paused
def build(
    rows: Iterable[flowset.Row],
    active_engine: engine_mod.PolicyEngine,
    draft_engine: engine_mod.PolicyEngine | None,
    group_by: tuple[str, ...],
    within: tuple[str, ...] = (),
) -> Graph:
    """The map of `rows`: nodes per workload (or label group), edges with verdicts under both policies."""
    nodes = _Nodes(group_by, within)
    ports: dict[tuple[str, str], dict[tuple[str, int | None], _PortAcc]] = {}
    judge_active = flowset.Judge(active_engine)
    judge_draft = flowset.Judge(draft_engine) if draft_engine is not None else None
    window = flowset.flow_set(rows, active_engine)
    for flow in window.distinct:
        src = nodes.node_for(flow.source, flow.src)
        dst = nodes.node_for(flow.destination, flow.dst)
        acc = ports.setdefault((src, dst), {}).setdefault((flow.proto, flow.dport), _PortAcc())
        _account(acc, flow, judge_active, judge_draft)
    return Graph(
        group_by=group_by,
        within=within,
        nodes=tuple(
            _replace_members(node, members) for node, members in sorted(nodes.by_id.values(), key=_node_key)
        ),
        edges=tuple(_edge(s, d, ports[(s, d)]) for s, d in sorted(ports)),
        has_draft=draft_engine is not None,
        skipped_rows=window.skipped,
    )


def _node_key(entry: tuple[Node, set[str]]) -> str:
    return entry[0].id


def _account(
    acc: _PortAcc,
    flow: flowset.Flow,
    active: flowset.Judge,
    draft_judge: flowset.Judge | None,
) -> None:
    if flow.process:
        acc.processes.add(flow.process)
    if flow.client_process:
        acc.clients.add(flow.client_process)
    acc.connections += flow.connections
    acc.bytes += flow.bytes
    acc.packets += flow.packets
    acc.active[_INDEX[active(flow).outcome]] += flow.connections
    if draft_judge is not None:
        if acc.draft is None:
            acc.draft = [0, 0, 0]
        acc.draft[_INDEX[draft_judge(flow).outcome]] += flow.connections


def _edge(src: str, dst: str, accs: dict[tuple[str, int | None], _PortAcc]) -> Edge:
    uses = []
    for (proto, dport), acc in sorted(accs.items(), key=_port_order):
        uses.append(
            PortUse(
                proto=proto,
                dport=dport,
                processes=tuple(sorted(acc.processes)),
                client_processes=tuple(sorted(acc.clients)),
                connections=acc.connections,
                bytes=acc.bytes,
                packets=acc.packets,
                active=OutcomeCounts(*acc.active),
                draft=None if acc.draft is None else OutcomeCounts(*acc.draft),
            )
        )
    return Edge(src, dst, tuple(uses))


def _port_order(item: tuple[tuple[str, int | None], _PortAcc]) -> tuple[int, str]:
    """By port (portless protocols first), then protocol."""
    (proto, dport), _ = item
    return (-1 if dport is None else dport, proto)


class _Nodes:
    """The map's nodes while the flows stream in, each with the members flows bring to it.

    A node is a function of its peer alone (and of the grouping), so it is made once per distinct
    peer, not once per flow end: making one builds label sets and texts, about a tenth of a map of
    3,000 flows when done for each of their 6,000 ends. This class does not decide what a node is
    (`_make_node` does).
    """

    def __init__(self, group_by: tuple[str, ...], within: tuple[str, ...]) -> None:
        self.group_by, self.within = group_by, within
        self.by_id: dict[str, tuple[Node, set[str]]] = {}
        self._ids_by_peer: dict[flowset.Peer, str] = {}

    def node_for(self, peer: flowset.Peer, address: addresses.Address) -> str:
        """The node id of a peer, creating the node on first sight; records the member it brings."""
        node_id = self._ids_by_peer.get(peer)
        if node_id is None:
            node = _make_node(peer, self.group_by, self.within)
            self.by_id.setdefault(node.id, (node, set()))
            node_id = self._ids_by_peer[peer] = node.id
        self.by_id[node_id][1].add(peer.name if peer.is_workload else str(address))  # text only when needed
        return node_id


def _make_node(peer: flowset.Peer, group_by: tuple[str, ...], within: tuple[str, ...]) -> Node:
    if peer.kind is flowset.PeerKind.IP_LIST:
        return Node(f"ipList:{peer.name}", "ipList", f"ipList {peer.name}", labels.Labels(), None, ())
    if peer.kind is flowset.PeerKind.EXTERNAL:
        return Node(flowset.EXTERNAL, "external", "unknown (external)", labels.Labels(), None, ())
    cluster = _pairs(peer.labels, within) if within else None
    if not group_by:
        return Node(f"workload:{peer.name}", peer.kind.value, peer.name, peer.labels, cluster, ())
    keys = (*within, *group_by)
    text = _pairs(peer.labels, keys)
    group = labels.Labels({k: v for k, v in peer.labels.items() if k in keys})
    return Node(f"group:{text}", "group", _pairs(peer.labels, group_by), group, cluster, ())


def _pairs(own: Mapping[str, str], keys: tuple[str, ...]) -> str:
    return ",".join(f"{k}={own.get(k, NO_VALUE)}" for k in keys)


def _replace_members(node: Node, members: set[str]) -> Node:
    return Node(node.id, node.kind, node.label, node.labels, node.cluster, tuple(sorted(members)))


# -- Graphviz ----------------------------------------------------------------------------------


def to_dot(graph: Graph) -> str:
    """A Graphviz digraph: clusters for `within`, one line per node and per edge.

    Edges are green / orange / red by their worst outcome under the active policy; when the draft
    says something worse or better the edge is dashed and its label says what the draft does.
    """
    lines = ["digraph microseg {", "  rankdir=LR;", '  node [shape=box, fontname="Helvetica"];']
    clusters: dict[str | None, list[Node]] = {}
    for node in graph.nodes:
        clusters.setdefault(node.cluster, []).append(node)
    for index, (cluster, members) in enumerate(sorted(clusters.items(), key=lambda kv: kv[0] or "")):
        indent = "  "
        if cluster is not None:
            lines.append(f"  subgraph cluster_{index} {{")
            lines.append(f"    label={_quote(cluster)};")
            indent = "    "
        lines.extend(f"{indent}{_node_line(n)}" for n in members)
        if cluster is not None:
            lines.append("  }")
    lines.extend(f"  {_edge_line(e)}" for e in graph.edges)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _node_line(node: Node) -> str:
    shape = {"group": "box3d", "ipList": "folder", "external": "ellipse", "unmanaged": "box"}.get(
        node.kind, "box"
    )
    style = ', style="dashed"' if node.kind == "unmanaged" else ""
    return f"{_quote(node.id)} [label={_quote(node.label)}, shape={shape}{style}];"


def _edge_line(edge: Edge) -> str:
    active, draft = edge.active.worst, edge.draft
    shown = [p.text for p in edge.ports[:DOT_PORTS_SHOWN]]
    if len(edge.ports) > DOT_PORTS_SHOWN:
        shown.append(f"+{len(edge.ports) - DOT_PORTS_SHOWN} more")
    label = ", ".join(shown)
    attrs = [f"color={COLOURS[active]}"]
    if draft is not None and draft.worst is not active:
        label += f" (draft: {draft.worst.value})"
        attrs.append("style=dashed")
    return f"{_quote(edge.source)} -> {_quote(edge.destination)} [label={_quote(label)}, {', '.join(attrs)}];"


def _quote(text: str) -> str:
    """A DOT quoted string: backslashes and quotes escaped, no raw newlines."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'

"""Dependency map: flow sets (parsing, resolving, deduplication), graph JSON, DOT."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microseg.analytics import depmap, flowset
from microseg.errors import ValidationError
from microseg.model import verdicts
from tests.analytics import (
    APP1,
    BILLING,
    CORP_USER,
    OUTSIDE,
    WEB1,
    draft_engine,
    example_engine,
    hour_of_traffic,
    row,
)

ENGINE = example_engine()
DRAFT = draft_engine()


def edge(graph: depmap.Graph, src: str, dst: str) -> depmap.Edge:
    return next(e for e in graph.edges if (e.source, e.destination) == (src, dst))


# -- flow sets ---------------------------------------------------------------------------------


def test_both_reports_of_one_connection_count_once_with_both_processes() -> None:
    flows = flowset.flows(hour_of_traffic(), ENGINE)
    web_to_app = [f for f in flows if (str(f.src), str(f.dst)) == (WEB1, APP1)]
    assert len(web_to_app) == 1
    (flow,) = web_to_app
    assert (flow.connections, flow.process, flow.client_process) == (10, "java", "nginx")
    assert flow.reporters == ("prod-app-1", "prod-web-1")


def test_a_connection_reported_only_by_its_source_counts_and_keeps_the_client_process() -> None:
    (flow,) = [f for f in flowset.flows(hour_of_traffic(), ENGINE) if str(f.dst) == BILLING]
    assert (flow.connections, flow.process, flow.client_process) == (4, None, "java")
    assert flow.destination == flowset.Peer(
        flowset.PeerKind.UNMANAGED, "legacy-billing", ENGINE.effective_labels("legacy-billing")
    )


def test_the_same_connection_in_two_buckets_is_two_flows() -> None:
    rows = [row("prod-app-1", "in", WEB1, APP1, 8443, bucket=b, connections=2) for b in (0.0, 3600.0)]
    assert [f.connections for f in flowset.flows(rows, ENGINE)] == [2, 2]


@pytest.mark.parametrize(
    ("address", "kind", "name"),
    [
        (WEB1, flowset.PeerKind.WORKLOAD, "prod-web-1"),
        (BILLING, flowset.PeerKind.UNMANAGED, "legacy-billing"),
        (CORP_USER, flowset.PeerKind.IP_LIST, "corp-users"),
        ("10.77.200.3", flowset.PeerKind.EXTERNAL, "external"),  # carved out of corp-users by `except`
        (OUTSIDE, flowset.PeerKind.EXTERNAL, "external"),
    ],
    ids=["workload", "unmanaged", "ip-list", "ip-list-except", "external"],
)
def test_each_end_resolves_to_a_workload_an_ip_list_or_external(
    address: str, kind: flowset.PeerKind, name: str
) -> None:
    peer = flowset.PeerResolver(ENGINE).peer(flowset.parse(row("x", "in", address, WEB1, 80)).src)
    assert (peer.kind, peer.name) == (kind, name)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("direction", "sideways"),
        ("src", "10.77.1.300"),
        ("dport", 70000),
        ("proto", "gre"),
        ("verdict", "maybe"),
        ("connections", -1),
        ("bytes", True),
        ("bucket", "noon"),
        ("reporter", ""),
    ],
)
def test_a_bad_row_is_refused_naming_the_field(field: str, value: Any) -> None:
    bad = row("prod-app-1", "in", WEB1, APP1, 8443) | {field: value}
    with pytest.raises(ValidationError) as info:
        flowset.parse(bad)
    assert info.value.field == field


def test_a_row_missing_a_field_is_refused() -> None:
    bad = row("prod-app-1", "in", WEB1, APP1, 8443)
    del bad["lastSeen"]
    with pytest.raises(ValidationError, match="lastSeen"):
        flowset.parse(bad)


# -- the graph ---------------------------------------------------------------------------------


def test_workload_nodes_include_unmanaged_ip_list_and_external_peers() -> None:
    graph = depmap.build(hour_of_traffic(), ENGINE, None, ())
    kinds = {n.id: n.kind for n in graph.nodes}
    assert kinds["workload:prod-web-1"] == "workload"
    assert kinds["workload:legacy-billing"] == "unmanaged"
    assert kinds["ipList:corp-users"] == "ipList"
    assert kinds["external"] == "external"
    outside = next(n for n in graph.nodes if n.id == "external")
    assert outside.members == (OUTSIDE,)
    assert not graph.has_draft and all(e.draft is None for e in graph.edges)


def test_edges_carry_ports_processes_counts_and_both_verdicts() -> None:
    graph = depmap.build(hour_of_traffic(), ENGINE, DRAFT, ())
    web = edge(graph, "workload:prod-web-1", "workload:prod-app-1")
    (use,) = web.ports
    assert (use.text, use.processes, use.client_processes, use.connections) == (
        "8443/tcp",
        ("java",),
        ("nginx",),
        10,
    )
    assert web.active == depmap.OutcomeCounts(allowed=10)
    # dev runs in alert mode: the draft's default deny is logged, not enforced
    dev = edge(graph, "workload:dev-web-1", "workload:dev-app-1")
    assert (dev.active.worst, dev.draft) == (
        verdicts.Outcome.ALLOWED,
        depmap.OutcomeCounts(would_block=3),
    )
    # prod enforces: the security tier blocks dev -> prod under both policies
    attempt = edge(graph, "workload:dev-app-1", "workload:prod-db-1")
    assert attempt.active == attempt.draft == depmap.OutcomeCounts(blocked=1)
    billing = edge(graph, "workload:prod-app-1", "workload:legacy-billing")
    assert (billing.active, billing.draft) == (
        depmap.OutcomeCounts(allowed=4),
        depmap.OutcomeCounts(blocked=4),
    )


def test_label_groups_within_a_key_merge_workloads_and_cluster_by_the_within_values() -> None:
    rows = [
        row("prod-app-1", "in", WEB1, APP1, 8443, connections=10),
        row("prod-app-2", "in", "10.77.1.12", "10.77.1.22", 8443, connections=5),
        row("dev-app-1", "in", "10.77.2.11", "10.77.2.21", 8443, connections=1),
    ]
    graph = depmap.build(rows, ENGINE, None, ("app", "role"), ("env",))
    prod = edge(graph, "group:env=prod,app=crm,role=web", "group:env=prod,app=crm,role=app")
    assert prod.connections == 15
    web = next(n for n in graph.nodes if n.id == "group:env=prod,app=crm,role=web")
    assert (web.label, web.cluster, web.members) == (
        "app=crm,role=web",
        "env=prod",
        ("prod-web-1", "prod-web-2"),
    )
    assert {e.source for e in graph.edges} == {
        "group:env=prod,app=crm,role=web",
        "group:env=dev,app=crm,role=web",
    }


def test_a_workload_without_a_group_key_gets_a_none_group_not_dropped() -> None:
    graph = depmap.build(hour_of_traffic(), ENGINE, None, ("app", "role"))
    assert "group:app=(none),role=billing" in {n.id for n in graph.nodes}


def test_graph_json_is_plain_json_with_every_node_an_edge_names() -> None:
    data = json.loads(json.dumps(depmap.build(hour_of_traffic(), ENGINE, DRAFT, ("role",)).to_json()))
    ids = {n["id"] for n in data["nodes"]}
    assert {e["source"] for e in data["edges"]} | {e["destination"] for e in data["edges"]} <= ids
    billing = next(e for e in data["edges"] if e["destination"] == "group:role=billing")
    assert (billing["verdict"], billing["draftVerdict"]) == ("allowed", "blocked")
    assert billing["ports"][0] | {"active": None, "draft": None} == {
        "port": 5000,
        "protocol": "tcp",
        "processes": [],
        "clientProcesses": ["java"],
        "connections": 4,
        "bytes": 4000,
        "packets": 40,
        "active": None,
        "draft": None,
    }


# -- DOT ---------------------------------------------------------------------------------------

QUOTED = r'"(?:[^"\\]|\\.)*"'
NODE_LINE = re.compile(rf"^\s*{QUOTED} \[label={QUOTED}, shape=\w+(, style=\"dashed\")?\];$")
EDGE_LINE = re.compile(rf"^\s*({QUOTED}) -> ({QUOTED}) \[label={QUOTED}, color=(\w+)(, style=dashed)?\];$")
OTHER_LINE = re.compile(r'^(digraph microseg \{|\s*rankdir=LR;|\s*node \[.*\];|\s*subgraph cluster_\d+ \{|'
                        rf"\s*label={QUOTED};|\s*\}})$")  # fmt: skip


def check_dot(text: str, graph: depmap.Graph) -> list[re.Match[str]]:
    """Every line is a known statement, braces balance outside strings, one edge line per edge."""
    depth = 0
    for char in re.sub(QUOTED, '""', text):
        depth += {"{": 1, "}": -1}.get(char, 0)
        assert depth >= 0
    assert depth == 0
    lines = text.rstrip("\n").split("\n")
    for line in lines:
        assert NODE_LINE.match(line) or EDGE_LINE.match(line) or OTHER_LINE.match(line), line
    edges = [m for m in map(EDGE_LINE.match, lines) if m]
    assert len(edges) == len(graph.edges)
    assert sum(1 for line in lines if NODE_LINE.match(line)) == len(graph.nodes)
    return edges


def test_dot_colours_edges_by_active_verdict_and_marks_draft_changes() -> None:
    graph = depmap.build(hour_of_traffic(), ENGINE, DRAFT, ("app", "role"), ("env",))
    colours = {
        (m.group(1), m.group(2)): (m.group(3), bool(m.group(4)))
        for m in check_dot(depmap.to_dot(graph), graph)
    }
    assert colours['"group:env=dev,app=crm,role=app"', '"group:env=prod,app=crm,role=db"'] == ("red", False)
    assert colours['"group:env=dev,app=crm,role=web"', '"group:env=dev,app=crm,role=app"'] == ("green", True)
    assert colours['"group:env=prod,app=crm,role=app"', '"external"'] == ("red", True)
    assert 'label="8443/tcp (draft: would-block)"' in depmap.to_dot(graph)
    assert depmap.to_dot(graph).count("subgraph cluster_") == 2


def test_dot_shows_a_few_ports_and_counts_the_rest() -> None:
    rows = [row("prod-app-1", "in", WEB1, APP1, p) for p in range(9000, 9010)]
    text = depmap.to_dot(depmap.build(rows, ENGINE, None, ()))
    assert 'label="9000/tcp, 9001/tcp, 9002/tcp, 9003/tcp, 9004/tcp, 9005/tcp, +4 more"' in text


label_values = st.text(alphabet='ab"{}\\ -=', min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 60), st.integers(1, 60), st.sampled_from([22, 443, 8443, None])),
        min_size=1,
        max_size=25,
    ),
    st.sampled_from([(), ("role",), ("app", "role")]),
    st.sampled_from([(), ("env",)]),
)
def test_dot_parses_for_any_flow_set(pairs: list[tuple[int, int, int | None]], group_by: tuple[str, ...],
                                     within: tuple[str, ...]) -> None:  # fmt: skip
    # hosts .1-.60 of 10.77.1.0/24 and 10.77.200.0/24: workloads, unmanaged, an IP list, outside
    rows = [
        row("r", "in", f"10.77.{1 + 199 * (a % 2)}.{a}", f"10.77.{1 + 8 * (b % 3 == 0)}.{b}", p,
            proto="tcp" if p else "icmp")
        for a, b, p in pairs
    ]  # fmt: skip
    graph = depmap.build(rows, ENGINE, DRAFT, group_by, within)
    check_dot(depmap.to_dot(graph), graph)


@given(label_values)
def test_dot_quotes_any_text(text: str) -> None:
    assert re.fullmatch(QUOTED, depmap._quote(text))

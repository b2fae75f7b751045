"""Lab topology files: the shipped default describes the CRM lab, flows resolve to the right hosts,
and every mistake is reported as file:line: field: message, all at once, with nothing returned.

The error table starts from one valid topology (BASE) and changes one thing each; the expected line
is the line of the change.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from microseg.lab import topology
from tests.lab import labs

BASE = textwrap.dedent("""\
    everyHost:
      services:
        - {port: 22, process: sshd}
    hosts:
      - name: web-1
        labels: {env: prod, role: web}
        services:
          - {port: 80, process: nginx}
        talksTo:
          - {to: "role=db", port: 3306, client: java}
      - name: db-1
        address: 10.77.1.31
        labels: {env: prod, role: db}
        services:
          - {port: 3306, process: mysqld}
          - {port: 53, protocol: udp, process: named}
    """)


def problems_of(text: str) -> list[str]:
    with pytest.raises(topology.TopologyError) as caught:
        topology.load_text(text, "lab.yaml")
    return [str(p) for p in caught.value.problems]


def test_the_default_topology_is_the_crm_lab() -> None:
    top = topology.load(topology.default_path())
    names = [h.name for h in top.hosts]
    assert names == [
        "lb",
        "web-1",
        "web-2",
        "app-1",
        "app-2",
        "db-1",
        "cache-1",
        "monitoring",
        "dev-web-1",
        "attacker",
    ]
    db = top.host("db-1")
    assert db.serves(3306, "tcp") == topology.ServiceSpec(3306, "tcp", "mysqld")
    assert dict(top.host("dev-web-1").labels)["env"] == "dev"
    for host in top.hosts:  # sshd and node_exporter everywhere
        assert host.serves(22, "tcp") is not None and host.serves(9100, "tcp") is not None
    assert len({h.address for h in top.hosts}) == len(top.hosts)


def test_default_flows_are_the_application_and_nothing_more() -> None:
    flows = {(f.source, f.target, f.port) for f in topology.load(topology.default_path()).flows()}
    assert {
        ("lb", "web-1", 80),
        ("web-2", "app-1", 8080),
        ("app-1", "db-1", 3306),
        ("app-2", "cache-1", 6379),
    } <= flows
    assert ("monitoring", "dev-web-1", 9100) in flows and ("monitoring", "monitoring", 9100) not in flows
    assert {f for f in flows if f[2] == 3306} == {("app-1", "db-1", 3306), ("app-2", "db-1", 3306)}
    assert {f[2] for f in flows if f[0] == "attacker"} == {22}
    assert not [f for f in flows if f[0] == "dev-web-1"]


def test_flows_resolve_selectors_and_addresses_are_allocated_in_order() -> None:
    top = topology.load_text(BASE, "lab.yaml")
    assert top.host("web-1").address == "10.77.1.1"  # the first free one
    assert top.host("db-1").address == "10.77.1.31"
    assert top.flows() == (topology.Flow("web-1", "db-1", "10.77.1.31", 3306, "tcp", "java", 1.0),)
    assert [s.process for s in top.host("db-1").services] == ["mysqld", "named", "sshd"]


def change(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


CASES = [
    (
        "unknown-top-key",
        change("hosts:\n", "hostz: []\nhosts:\n"),
        "lab.yaml:4: hostz: unknown field 'hostz'",
    ),
    (
        "unknown-host-key",
        change("  - name: web-1\n", "  - name: web-1\n    role: web\n"),
        "lab.yaml:6: hosts[0].role: unknown field 'role'",
    ),
    (
        "missing-labels",
        change("    labels: {env: prod, role: web}\n", ""),
        "lab.yaml:5: hosts[0]: missing required field 'labels'",
    ),
    ("bad-hostname", change("name: web-1", "name: Web_1"), "lab.yaml:5: hosts[0].name: host name 'Web_1'"),
    (
        "duplicate-host",
        change("name: db-1", "name: web-1"),
        "lab.yaml:11: hosts[1].name: duplicate host name web-1 (first defined at lab.yaml:5)",
    ),
    (
        "address-outside-lab",
        change("10.77.1.31", "192.168.1.31"),
        "lab.yaml:12: hosts[1].address: 192.168.1.31: lab hosts need an address in 10.77.0.0/16",
    ),
    (
        "address-is-gateway",
        change("10.77.1.31", "10.77.0.1"),
        "lab.yaml:12: hosts[1].address: 10.77.0.1: lab hosts need an address",
    ),
    (
        "not-an-address",
        change("10.77.1.31", "10.77.1.300"),
        "lab.yaml:12: hosts[1].address: '10.77.1.300' is not an IP address",
    ),
    ("bad-label", change("role: db}", "role: -db}"), "lab.yaml:13: hosts[1].labels.role: label role='-db'"),
    (
        "port-range",
        change("port: 80,", "port: 80000,"),
        "lab.yaml:8: hosts[0].services[0].port: port 80000 is not between 1 and 65535",
    ),
    (
        "port-text",
        change("port: 80,", "port: http,"),
        "lab.yaml:8: hosts[0].services[0].port: expected an integer",
    ),
    (
        "protocol",
        change("protocol: udp", "protocol: sctp"),
        "lab.yaml:16: hosts[1].services[1].protocol: 'sctp' is not one of tcp, udp",
    ),
    (
        "long-process",
        change("process: mysqld", "process: mysqld-with-a-long-name"),
        "lab.yaml:15: hosts[1].services[0].process: process name 'mysqld-with-a-long-name'",
    ),
    (
        "served-twice",
        change("{port: 80, process: nginx}", "{port: 22, process: nginx}"),
        "lab.yaml:8: hosts[0].services[0]: tcp/22 is served twice (also at lab.yaml:3)",
    ),
    ("selector-syntax", change('to: "role=db"', 'to: "role in db"'), "lab.yaml:10: hosts[0].talksTo[0].to:"),
    (
        "selector-picks-nothing",
        change('to: "role=db"', 'to: "role=cache"'),
        "lab.yaml:10: hosts[0].talksTo[0].to: 'role=cache' picks no host other than web-1",
    ),
    (
        "target-does-not-serve",
        change("port: 3306, client", "port: 3307, client"),
        "lab.yaml:10: hosts[0].talksTo[0].port: db-1 (picked by 'role=db') serves nothing on tcp/3307",
    ),
    (
        "rate-too-high",
        change("client: java}", "client: java, rate: 50}"),
        "lab.yaml:10: hosts[0].talksTo[0].rate: rate 50 must be above 0 and at most 10 per second",
    ),
    (
        "rate-text",
        change("client: java}", "client: java, rate: fast}"),
        "lab.yaml:10: hosts[0].talksTo[0].rate: expected connections per second",
    ),
    ("no-hosts", "hosts: []\n", "lab.yaml:1: hosts: 0 hosts; a lab holds 1 to 200"),
    ("hosts-not-a-list", "hosts: {web-1: {}}\n", "lab.yaml:1: hosts: expected a list, got a mapping"),
    ("yaml-syntax", "hosts: [\n", "lab.yaml:2: YAML syntax error"),
    (
        "two-documents",
        BASE + "---\nhosts: []\n",
        "lab.yaml: expected one YAML document with hosts, got 2 documents",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_mistake_is_reported_with_file_line_and_field(text: str, expected: str) -> None:
    found = problems_of(text)
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_comes_at_once() -> None:
    text = (
        change("port: 80,", "port: 0,")
        .replace("10.77.1.31", "10.77.300.1")
        .replace("process: mysqld", "process: a/b")
    )
    found = problems_of(text)
    assert [p.split(":")[1] for p in found] == ["8", "12", "15"], found


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(topology.TopologyError, match=r"nothing\.yaml: cannot read the file"):
        topology.load(tmp_path / "nothing.yaml")


def test_the_cli_reports_a_bad_topology_and_makes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "lab.yaml"
    bad.write_text(change("port: 80,", "port: 0,"))
    state_dir = tmp_path / "state"
    done = labs.cli(
        "up", "--no-agents", "--topology", str(bad), "--state-dir", str(state_dir), "--prefix", "ms-tbad"
    )
    assert done.returncode == 2
    assert "1 problem in the lab topology; nothing was made" in done.stderr
    assert f"{bad}:8: hosts[0].services[0].port: port 0 is not between 1 and 65535" in done.stderr
    assert not state_dir.exists()

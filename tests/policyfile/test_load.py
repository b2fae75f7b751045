"""What each form of the format loads as: the short forms and the long forms mean the same, scalars
keep the text they were written with, and YAML conveniences (anchors, merge keys) work."""

from __future__ import annotations

import ipaddress
import textwrap
from datetime import UTC, datetime

import pytest

from microseg import policyfile
from microseg.model import estate, rules, selectors, services
from tests.policyfile import texts


def one_rule(body: str) -> rules.Rule:
    """The rule of a one-rule policy whose rule mapping is `body` (flow style, without braces)."""
    text = texts.doc("IPList", "metadata: {name: corp}\nspec: {cidrs: [10.77.200.0/24]}\n") + "---\n"
    text += texts.doc("Service", "metadata: {name: mysql}\nspec: {ports: [{port: 3306}]}\n") + "---\n"
    text += texts.doc("Policy", f"metadata: {{name: p}}\nspec:\n  tier: application\n  rules: [{{{body}}}]\n")
    (rule,) = policyfile.load_text(text).rules
    return rule


BASE = "name: r, priority: 1, action: allow"
SEL = selectors.SelectorPeer


# (id, rule fields after BASE, the sources it loads as)
PEERS = [
    ("bare-any", "from: any", (selectors.AnyPeer(),)),
    ("listed-any", "from: [any]", (selectors.AnyPeer(),)),
    ("any-true", "from: [{any: true}]", (selectors.AnyPeer(),)),
    ("selector-text", 'from: [{selector: "env=prod,role in (web,app),!quarantine"}]',
     (SEL(selectors.LabelSelector.parse("env=prod,role in (web,app),!quarantine")),)),
    ("selector-mapping", "from: [{selector: {matchLabels: {env: prod}, matchExpressions: [{key: role, operator: In, values: [web, app]}, {key: quarantine, operator: DoesNotExist}]}}]",
     (SEL(selectors.LabelSelector.parse("env=prod,role in (web,app),!quarantine")),)),
    ("empty-selector-is-all-workloads", "from: [{selector: {}}]", (SEL(selectors.LabelSelector()),)),
    ("ip-list", "from: [{ipList: corp}]", (selectors.IpListPeer("corp"),)),
    ("cidr-text", "from: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]",
     (selectors.CidrPeer((ipaddress.ip_network("10.0.0.0/8"),), (ipaddress.ip_network("10.1.0.0/16"),)),)),
    ("cidr-list", "from: [{cidr: [10.2.0.0/16, 10.1.0.0/16]}]",
     (selectors.CidrPeer((ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_network("10.2.0.0/16"))),)),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "expected"), [c[1:] for c in PEERS], ids=[c[0] for c in PEERS])
def test_peers(fields: str, expected: tuple[selectors.Peer, ...]) -> None:
    assert one_rule(f"{BASE}, {fields}, to: any, services: any").sources == expected


TCP = services.Protocol.TCP
# (id, services field, (name, str) of each service it loads as)
SERVICES = [
    ("bare-any", "services: any", [("any", "any")]),
    ("named", "services: [mysql]", [("mysql", "3306/tcp")]),
    ("inline-port-is-tcp", "services: [{port: 8443}]", [("inline:8443/tcp", "8443/tcp")]),
    ("inline-range-udp", "services: [{port: 8000, endPort: 8100, protocol: udp}]", [("inline:8000-8100/udp", "8000-8100/udp")]),
    ("whole-protocol", "services: [{protocol: icmp}]", [("inline:icmp/*", "icmp/*")]),
    ("mixed", "services: [mysql, any, {port: 1}]", [("any", "any"), ("inline:1/tcp", "1/tcp"), ("mysql", "3306/tcp")]),
]  # fmt: skip


@pytest.mark.parametrize(("field", "expected"), [c[1:] for c in SERVICES], ids=[c[0] for c in SERVICES])
def test_services(field: str, expected: list[tuple[str, str]]) -> None:
    rule = one_rule(f"{BASE}, from: any, to: any, {field}")
    assert [(s.name, str(s)) for s in rule.services] == expected


def test_rule_defaults_and_policy_context() -> None:
    rule = one_rule(f"{BASE}, from: any, to: any, services: any")
    assert (rule.tier, rule.policy, rule.owner, rule.reason, rule.enabled) == (
        "application",
        "p",
        "",
        "",
        True,
    )
    assert rule.not_before is None and rule.not_after is None


def test_times_with_an_offset_become_utc() -> None:
    rule = one_rule(f"{BASE}, from: any, to: any, services: any, notBefore: 2026-07-01T02:00:00+02:00, "
                    "notAfter: '2026-08-01T00:00:00Z'")  # fmt: skip
    assert rule.not_before == datetime(2026, 7, 1, tzinfo=UTC) and rule.not_before.tzinfo is UTC
    assert rule.not_after == datetime(2026, 8, 1, tzinfo=UTC)


def test_scalars_keep_the_text_they_were_written_with() -> None:
    est = policyfile.load_text(texts.doc("Workload", """\
        metadata: {name: 2024, labels: {version: 1.10, enabled: yes, build: 007}}
        spec: {addresses: [10.77.0.1], attributes: {port: 80, started: 2026-01-01}}
        """))  # fmt: skip
    (w,) = est.workloads
    assert w.name == "2024"
    assert dict(w.labels) == {"version": "1.10", "enabled": "yes", "build": "007"}
    assert dict(w.attributes) == {"port": "80", "started": "2026-01-01"}


def test_anchors_and_merge_keys() -> None:
    est = policyfile.load_text(texts.HEAD + textwrap.dedent("""\
        kind: List
        items:
          - &web
            apiVersion: microseg.io/v1
            kind: Workload
            metadata: {name: web-1, labels: &labels {env: prod, role: web}}
            spec: {addresses: [10.77.0.1], mode: enforce}
          - <<: *web
            metadata: {name: web-2, labels: *labels}
            spec: {addresses: [10.77.0.2], mode: alert}
        """))  # fmt: skip
    assert [(w.name, str(w.labels), w.mode.value) for w in est.workloads] == [
        ("web-1", "env=prod,role=web", "enforce"),
        ("web-2", "env=prod,role=web", "alert"),
    ]


def test_settings_tiers_and_label_rules() -> None:
    est = policyfile.load_text(
        texts.doc("Settings", "spec: {controlPlane: [{address: '10.77.0.0/30', port: 8440, endPort: 8441, protocol: udp}]}\n")
        + "---\n" + texts.doc("Tier", "metadata: {name: security}\nspec: {order: 350, description: last}\n")
        + "---\n" + texts.doc("LabelRule", "metadata: {name: lr}\nspec: {match: {cidr: 10.77.0.0/16}, labels: {site: lab}}\n")
    )  # fmt: skip
    assert [str(e) for e in est.control_plane] == ["10.77.0.0/30 8440-8441/udp"]
    assert est.quarantine_allow is None
    assert [(t.name, t.order) for t in est.tiers] == [
        ("quarantine", 100),
        ("application", 300),
        ("security", 350),
    ]
    (lr,) = est.label_rules
    assert (lr.cidr, lr.priority, dict(lr.labels)) == (
        ipaddress.ip_network("10.77.0.0/16"),
        100,
        {"site": "lab"},
    )


def test_an_empty_tree_is_an_empty_estate() -> None:
    assert policyfile.load_text("# nothing yet\n---\n") == estate.Estate()

"""Attribute provenance and label-rule trust: an agent's own word does not buy labels by default.

Issue 15 §2: an env=dev agent reporting the hostname `h1-db-1` gained role=db through a hostname
label rule. Each attribute says who said it (operator, enrollment, agent); a label rule says which
of them it believes, by default everything but the agent.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from microseg.errors import ValidationError
from microseg.model import addresses, labelrules, workloads
from microseg.model.labels import Labels

Rule = labelrules.LabelRule
ROLE_DB = Labels({"role": "db"})
ALL = frozenset({"operator", "enrollment", "agent"})
AGENT_ONLY = frozenset({"agent"})


def workload(
    name: str = "h1",
    attributes: Mapping[str, str] | None = None,
    sources: Mapping[str, str] | None = None,
    addrs: tuple[str, ...] = ("10.0.1.5",),
) -> workloads.Workload:
    nets = tuple(map(addresses.network, addrs))
    return workloads.Workload(
        name, addresses=nets, attributes=dict(attributes or {}), attribute_sources=dict(sources or {})
    )


DB_HOST = {"hostname": "h1-db-1", "os": "linux"}
BY_AGENT = {"hostname": "agent", "os": "agent"}
GLOB = Rule("r", ROLE_DB, hostname_glob="*-db-*")
CASES: dict[str, tuple[labelrules.LabelRule, workloads.Workload, bool]] = {
    "no-source-is-operator-and-trusted": (GLOB, workload(attributes=DB_HOST), True),
    "operator-hostname-trusted": (GLOB, workload(attributes=DB_HOST, sources={"hostname": "operator"}), True),
    "enrollment-hostname-trusted": (
        GLOB,
        workload(attributes=DB_HOST, sources={"hostname": "enrollment"}),
        True,
    ),
    "agent-hostname-not-trusted-by-default": (GLOB, workload(attributes=DB_HOST, sources=BY_AGENT), False),
    "agent-hostname-does-not-fall-back-to-a-matching-name": (
        GLOB,
        workload("h1-db-1", attributes={"hostname": "h1-db-1"}, sources=BY_AGENT),
        False,
    ),
    "agent-hostname-trusted-when-the-rule-opts-in": (
        Rule("r", ROLE_DB, hostname_glob="*-db-*", trust=ALL),
        workload(attributes=DB_HOST, sources=BY_AGENT),
        True,
    ),
    "agent-only-trust-reads-agent-hostname": (
        Rule("r", ROLE_DB, hostname_glob="*-db-*", trust=AGENT_ONLY),
        workload(attributes=DB_HOST, sources=BY_AGENT),
        True,
    ),
    "agent-only-trust-ignores-operator-hostname": (
        Rule("r", ROLE_DB, hostname_glob="*-db-*", trust=AGENT_ONLY),
        workload(attributes=DB_HOST),
        False,
    ),
    "no-hostname-name-fallback-stays": (GLOB, workload("h1-db-1"), True),
    "no-hostname-name-is-operator-word": (
        Rule("r", ROLE_DB, hostname_glob="*-db-*", trust=AGENT_ONLY),
        workload("h1-db-1"),
        False,
    ),
    "agent-hostname-regex-not-trusted": (
        Rule("r", ROLE_DB, hostname_regex=r".*-db-\d+"),
        workload(attributes=DB_HOST, sources=BY_AGENT),
        False,
    ),
    "agent-os-not-trusted": (
        Rule("r", ROLE_DB, os="linux"),
        workload(attributes={"os": "linux"}, sources={"os": "agent"}),
        False,
    ),
    "agent-os-trusted-when-opted-in": (
        Rule("r", ROLE_DB, os="linux", trust=ALL),
        workload(attributes={"os": "linux"}, sources={"os": "agent"}),
        True,
    ),
    "operator-hostname-agent-os-both-needed": (
        Rule("r", ROLE_DB, hostname_glob="*-db-*", os="linux"),
        workload(attributes=DB_HOST, sources={"os": "agent"}),
        False,
    ),
    "source-of-an-absent-attribute-means-nothing": (
        GLOB,
        workload(attributes={"hostname": "h1-db-1"}, sources={"os": "agent"}),
        True,
    ),
    "cidr-is-not-about-attributes": (
        Rule("r", ROLE_DB, cidr=addresses.network("10.0.1.0/24")),
        workload(attributes=DB_HOST, sources=BY_AGENT),
        True,
    ),
}


@pytest.mark.parametrize(("rule", "target", "expected"), CASES.values(), ids=CASES.keys())
def test_conditions_read_only_trusted_attributes(
    rule: labelrules.LabelRule, target: workloads.Workload, expected: bool
) -> None:
    assert rule.matches(target) is expected
    assert (labelrules.effective_labels(target, [rule]).get("role") == "db") is expected


def test_the_default_trust_excludes_the_agent() -> None:
    assert GLOB.trust == labelrules.DEFAULT_TRUST == frozenset({"operator", "enrollment"})


def test_an_untrusted_rule_leaves_the_key_to_a_later_trusted_one() -> None:
    early = Rule("a", ROLE_DB, hostname_glob="*-db-*", priority=1)
    late = Rule("b", Labels({"role": "web"}), hostname_glob="h1*", priority=2, trust=ALL)
    target = workload(attributes=DB_HOST, sources=BY_AGENT)
    assert labelrules.effective_labels(target, [early, late])["role"] == "web"


@pytest.mark.parametrize(
    ("trust", "words"),
    [(frozenset(), "no source"), (frozenset({"operator", "root"}), "root"), (frozenset({"Agent"}), "Agent")],
    ids=["empty", "unknown", "wrong-case"],
)
def test_a_rule_trusts_known_sources_only(trust: frozenset[str], words: str) -> None:
    with pytest.raises(ValidationError) as info:
        Rule("r", ROLE_DB, hostname_glob="*", trust=trust)
    assert info.value.field == "trust" and words in info.value.message


def test_a_workload_refuses_an_unknown_source() -> None:
    with pytest.raises(ValidationError) as info:
        workload(attributes=DB_HOST, sources={"hostname": "kernel"})
    assert info.value.field == "attributeSources" and "kernel" in info.value.message


def test_source_of_defaults_to_operator() -> None:
    target = workload(attributes=DB_HOST, sources={"os": "agent"})
    assert target.source_of("hostname") is workloads.Provenance.OPERATOR
    assert target.source_of("os") is workloads.Provenance.AGENT


def test_sources_are_part_of_a_workloads_value() -> None:
    """The server's incremental path recompiles a workload only when it is unequal to before: a
    change of source alone must count as a change."""
    assert workload(attributes=DB_HOST) != workload(attributes=DB_HOST, sources=BY_AGENT)
    assert workload(sources={"os": "agent", "hostname": "agent"}) == workload(sources=BY_AGENT)

"""Label rules: conditions, explicit labels win, (priority, name) order, earlier rule wins a key."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microseg.errors import ValidationError
from microseg.model import addresses, labelrules, workloads
from microseg.model.labels import Labels

Rule = labelrules.LabelRule
ROLE_DB = Labels({"role": "db"})


def workload(
    name: str = "db-1",
    addrs: tuple[str, ...] = ("10.0.1.5",),
    attributes: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    kind: workloads.WorkloadKind = workloads.WorkloadKind.VM,
) -> workloads.Workload:
    return workloads.Workload(
        name, kind, tuple(map(addresses.network, addrs)), Labels(labels or {}), dict(attributes or {})
    )


NET = addresses.network
CONDITIONS: dict[str, tuple[labelrules.LabelRule, workloads.Workload, bool]] = {
    "glob/name-matches": (Rule("r", ROLE_DB, hostname_glob="db-*"), workload("db-1"), True),
    "glob/name-differs": (Rule("r", ROLE_DB, hostname_glob="db-*"), workload("web-1"), False),
    "glob/is-case-sensitive": (Rule("r", ROLE_DB, hostname_glob="db-*"), workload("DB-1"), False),
    "glob/character-class": (Rule("r", ROLE_DB, hostname_glob="db-[0-9]"), workload("db-7"), True),
    "glob/hostname-attribute-beats-name": (
        Rule("r", ROLE_DB, hostname_glob="db-*"),
        workload("w1", attributes={"hostname": "db-9"}),
        True,
    ),
    "glob/name-ignored-when-hostname-set": (
        Rule("r", ROLE_DB, hostname_glob="db-*"),
        workload("db-1", attributes={"hostname": "web"}),
        False,
    ),
    "regex/full-match": (Rule("r", ROLE_DB, hostname_regex=r"db-\d+"), workload("db-12"), True),
    "regex/partial-is-not-enough": (Rule("r", ROLE_DB, hostname_regex=r"db-\d"), workload("db-12"), False),
    "regex/prefix-is-not-enough": (Rule("r", ROLE_DB, hostname_regex="db"), workload("db-1"), False),
    "os/matches-ignoring-case": (Rule("r", ROLE_DB, os="linux"), workload(attributes={"os": "Linux"}), True),
    "os/differs": (Rule("r", ROLE_DB, os="linux"), workload(attributes={"os": "windows"}), False),
    "os/absent": (Rule("r", ROLE_DB, os="linux"), workload(), False),
    "cidr/inside": (Rule("r", ROLE_DB, cidr=NET("10.0.1.0/24")), workload(), True),
    "cidr/outside": (Rule("r", ROLE_DB, cidr=NET("10.0.2.0/24")), workload(), False),
    "cidr/any-address-inside": (
        Rule("r", ROLE_DB, cidr=NET("10.0.2.0/24")),
        workload(addrs=("10.0.1.5", "10.0.2.5")),
        True,
    ),
    "cidr/v6-address-vs-v4-cidr": (
        Rule("r", ROLE_DB, cidr=NET("0.0.0.0/0")),
        workload(addrs=("2001:db8::1",)),
        False,
    ),
    "cidr/v6-inside": (Rule("r", ROLE_DB, cidr=NET("2001:db8::/32")), workload(addrs=("2001:db8::1",)), True),
    "cidr/unmanaged-network-inside": (
        Rule("r", ROLE_DB, cidr=NET("10.0.0.0/16")),
        workload(addrs=("10.0.1.0/24",), kind=workloads.WorkloadKind.UNMANAGED),
        True,
    ),
    "cidr/unmanaged-network-wider": (
        Rule("r", ROLE_DB, cidr=NET("10.0.1.0/25")),
        workload(addrs=("10.0.1.0/24",), kind=workloads.WorkloadKind.UNMANAGED),
        False,
    ),
    "all-conditions-hold": (
        Rule("r", ROLE_DB, hostname_glob="db-*", os="linux", cidr=NET("10.0.0.0/8")),
        workload(attributes={"os": "linux"}),
        True,
    ),
    "one-condition-fails": (
        Rule("r", ROLE_DB, hostname_glob="db-*", os="linux", cidr=NET("192.168.0.0/16")),
        workload(attributes={"os": "linux"}),
        False,
    ),
}


@pytest.mark.parametrize(("rule", "target", "expected"), CONDITIONS.values(), ids=CONDITIONS.keys())
def test_conditions(rule: labelrules.LabelRule, target: workloads.Workload, expected: bool) -> None:
    assert rule.matches(target) is expected
    effective = labelrules.effective_labels(target, [rule])
    assert (effective.get("role") == "db") is expected


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "match"),
        ({"hostname_glob": ""}, "match"),
        ({"hostname_regex": "db-("}, "hostnameRegex"),
        ({"hostname_glob": "db-*", "labels": Labels()}, "labels"),
    ],
    ids=["no-condition", "empty-glob-is-no-condition", "bad-regex", "no-labels"],
)
def test_invalid_rules(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"labels": ROLE_DB, **kwargs}
    with pytest.raises(ValidationError) as info:
        Rule("r", **args)  # type: ignore[arg-type]
    assert info.value.field == field


def test_explicit_labels_win() -> None:
    target = workload(labels={"role": "cache"})
    assert labelrules.effective_labels(target, [Rule("r", ROLE_DB, hostname_glob="*")])["role"] == "cache"


def test_rules_add_keys_that_are_not_set_and_keep_the_rest() -> None:
    target = workload(labels={"role": "cache"})
    rule = Rule("r", Labels({"role": "db", "env": "prod"}), hostname_glob="*")
    assert labelrules.effective_labels(target, [rule]) == Labels({"role": "cache", "env": "prod"})
    assert target.labels == Labels({"role": "cache"})


def test_lower_priority_number_applies_first() -> None:
    early = Rule("zz-late-name", Labels({"role": "early"}), hostname_glob="*", priority=10)
    late = Rule("aa-early-name", Labels({"role": "late", "extra": "x"}), hostname_glob="*", priority=20)
    for order in ([early, late], [late, early]):
        assert labelrules.effective_labels(workload(), order) == Labels({"role": "early", "extra": "x"})


def test_name_breaks_priority_ties() -> None:
    a = Rule("a-rule", Labels({"role": "from-a"}), hostname_glob="*")
    b = Rule("b-rule", Labels({"role": "from-b"}), hostname_glob="*")
    for order in ([a, b], [b, a]):
        assert labelrules.effective_labels(workload(), order)["role"] == "from-a"


def test_a_rule_that_does_not_match_takes_no_part() -> None:
    miss = Rule("a", Labels({"role": "miss"}), hostname_glob="web-*", priority=1)
    hit = Rule("b", Labels({"role": "hit"}), hostname_glob="db-*", priority=2)
    assert labelrules.effective_labels(workload(), [miss, hit])["role"] == "hit"


def test_no_rules_gives_explicit_labels() -> None:
    target = workload(labels={"app": "db"})
    assert labelrules.effective_labels(target, []) == target.labels


@given(st.permutations(list(range(6))))
def test_outcome_does_not_depend_on_rule_order(order: list[int]) -> None:
    pool = [
        Rule(f"r{i}", Labels({"role": f"v{i}", f"k{i % 3}": f"v{i}"}), hostname_glob="db-*", priority=i % 2)
        for i in range(6)
    ]
    expected = labelrules.effective_labels(workload(), pool)
    assert labelrules.effective_labels(workload(), [pool[i] for i in order]) == expected
    assert expected == Labels({"role": "v0", "k0": "v0", "k1": "v4", "k2": "v2"})

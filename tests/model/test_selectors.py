"""Selectors: Kubernetes requirement semantics, kubectl syntax, round trips, peers."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microseg.errors import ValidationError
from microseg.model import addresses, selectors
from tests.model import strategies as gen

IN, NOT_IN = selectors.Operator.IN, selectors.Operator.NOT_IN
EXISTS, DOES_NOT_EXIST = selectors.Operator.EXISTS, selectors.Operator.DOES_NOT_EXIST
Req = selectors.Requirement

# (requirement, labels, expected) -- the Kubernetes truth table, absent keys included.
MATCH_TABLE = {
    "in/value-listed": (Req("env", IN, ("prod", "stage")), {"env": "prod"}, True),
    "in/value-not-listed": (Req("env", IN, ("prod", "stage")), {"env": "dev"}, False),
    "in/key-absent": (Req("env", IN, ("prod",)), {"app": "web"}, False),
    "in/empty-value-listed": (Req("env", IN, ("",)), {"env": ""}, True),
    "in/empty-value-key-absent": (Req("env", IN, ("",)), {}, False),
    "notin/value-listed": (Req("env", NOT_IN, ("prod",)), {"env": "prod"}, False),
    "notin/value-not-listed": (Req("env", NOT_IN, ("prod",)), {"env": "dev"}, True),
    "notin/key-absent": (Req("env", NOT_IN, ("prod",)), {"app": "web"}, True),
    "exists/present": (Req("env", EXISTS), {"env": "prod"}, True),
    "exists/present-empty-value": (Req("env", EXISTS), {"env": ""}, True),
    "exists/absent": (Req("env", EXISTS), {"app": "web"}, False),
    "doesnotexist/present": (Req("env", DOES_NOT_EXIST), {"env": "prod"}, False),
    "doesnotexist/present-empty-value": (Req("env", DOES_NOT_EXIST), {"env": ""}, False),
    "doesnotexist/absent": (Req("env", DOES_NOT_EXIST), {}, True),
    "keys-are-case-sensitive": (Req("env", EXISTS), {"Env": "prod"}, False),
    "values-are-case-sensitive": (Req("env", IN, ("prod",)), {"env": "Prod"}, False),
}


@pytest.mark.parametrize(("req", "labelset", "expected"), MATCH_TABLE.values(), ids=MATCH_TABLE.keys())
def test_requirement_truth_table(
    req: selectors.Requirement, labelset: dict[str, str], expected: bool
) -> None:
    assert req.matches(labelset) is expected
    assert selectors.LabelSelector((req,)).matches(labelset) is expected


@given(gen.small_requirements(), gen.small_labelsets)
def test_requirement_matches_its_definition(req: selectors.Requirement, labelset: dict[str, str]) -> None:
    present = req.key in labelset
    expected = {
        IN: present and labelset.get(req.key) in req.values,
        NOT_IN: not present or labelset[req.key] not in req.values,
        EXISTS: present,
        DOES_NOT_EXIST: not present,
    }[req.operator]
    assert req.matches(labelset) is expected


@given(gen.small_requirements(), gen.small_labelsets)
def test_in_and_notin_are_complements_and_so_are_exists_and_doesnotexist(
    req: selectors.Requirement, labelset: dict[str, str]
) -> None:
    flipped = {IN: NOT_IN, NOT_IN: IN, EXISTS: DOES_NOT_EXIST, DOES_NOT_EXIST: EXISTS}[req.operator]
    assert Req(req.key, flipped, req.values).matches(labelset) is not req.matches(labelset)


INVALID_REQUIREMENTS = {
    "in-without-values": ("env", IN, ()),
    "notin-without-values": ("env", NOT_IN, ()),
    "exists-with-values": ("env", EXISTS, ("prod",)),
    "doesnotexist-with-values": ("env", DOES_NOT_EXIST, ("prod",)),
    "bad-key": ("bad key", EXISTS, ()),
    "bad-value": ("env", IN, ("not valid",)),
}


@pytest.mark.parametrize(
    ("key", "op", "values"), INVALID_REQUIREMENTS.values(), ids=INVALID_REQUIREMENTS.keys()
)
def test_invalid_requirements_are_rejected(key: str, op: selectors.Operator, values: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError):
        Req(key, op, values)


def test_requirement_values_are_sorted_and_deduplicated() -> None:
    assert Req("app", IN, ("b", "a", "b")).values == ("a", "b")
    assert Req("app", IN, ("b", "a")) == Req("app", IN, ("a", "b"))


def test_empty_selector_matches_everything() -> None:
    empty = selectors.LabelSelector()
    assert empty.matches({})
    assert empty.matches({"env": "prod", "quarantine": "true"})
    assert empty.keys == frozenset()


@given(st.lists(gen.small_requirements(), max_size=4), gen.small_labelsets)
def test_selector_is_the_conjunction_of_its_requirements(
    reqs: list[selectors.Requirement], labelset: dict[str, str]
) -> None:
    selector = selectors.LabelSelector(tuple(reqs))
    assert selector.matches(labelset) is all(r.matches(labelset) for r in reqs)
    assert set(selector.matched_by(labelset)) == {str(r) for r in reqs if r.matches(labelset)}


def test_selector_requirements_are_canonical() -> None:
    a = selectors.LabelSelector((Req("tier", EXISTS), Req("env", IN, ("prod",)), Req("tier", EXISTS)))
    b = selectors.LabelSelector((Req("env", IN, ("prod",)), Req("tier", EXISTS)))
    assert a == b and hash(a) == hash(b)
    assert str(a) == "env=prod,tier"
    assert a.keys == frozenset({"env", "tier"})


def test_of_builds_from_match_labels_and_match_expressions() -> None:
    selector = selectors.LabelSelector.of({"env": "prod"}, (Req("app", NOT_IN, ("db",)),))
    assert selector == selectors.LabelSelector.parse("env=prod,app!=db")
    assert selector.matches({"env": "prod"})
    assert not selector.matches({"env": "prod", "app": "db"})
    assert selectors.LabelSelector.of() == selectors.LabelSelector()


PARSE_CASES = {
    "equals": ("env=prod", (Req("env", IN, ("prod",)),)),
    "double-equals": ("env==prod", (Req("env", IN, ("prod",)),)),
    "not-equals": ("tier!=web", (Req("tier", NOT_IN, ("web",)),)),
    "in-set": ("app in (a,b)", (Req("app", IN, ("a", "b")),)),
    "in-set-spaces": ("app  in  ( a , b )", (Req("app", IN, ("a", "b")),)),
    "notin-set": ("app notin (c)", (Req("app", NOT_IN, ("c",)),)),
    "does-not-exist": ("!quarantine", (Req("quarantine", DOES_NOT_EXIST),)),
    "does-not-exist-space": ("! quarantine", (Req("quarantine", DOES_NOT_EXIST),)),
    "exists": ("team", (Req("team", EXISTS),)),
    "empty-value": ("env=", (Req("env", IN, ("",)),)),
    "empty-value-not-equals": ("env!=", (Req("env", NOT_IN, ("",)),)),
    "empty-text": ("", ()),
    "prefixed-key": ("example.com/app=web", (Req("example.com/app", IN, ("web",)),)),
    "key-named-in": ("in", (Req("in", EXISTS),)),
    # Kubernetes: a set holds possibly empty identifiers, so "()" and stray commas mean "".
    "in-empty-parens-means-empty-value": ("app in ()", (Req("app", IN, ("",)),)),
    "in-leading-comma": ("app in (,a)", (Req("app", IN, ("", "a")),)),
    "in-trailing-comma": ("app in (a,)", (Req("app", IN, ("", "a")),)),
    "kubectl-example": (
        "env=prod,tier!=web,app in (a,b),app notin (c),!quarantine,team",
        (
            Req("env", IN, ("prod",)),
            Req("tier", NOT_IN, ("web",)),
            Req("app", IN, ("a", "b")),
            Req("app", NOT_IN, ("c",)),
            Req("quarantine", DOES_NOT_EXIST),
            Req("team", EXISTS),
        ),
    ),
}


@pytest.mark.parametrize(("text", "reqs"), PARSE_CASES.values(), ids=PARSE_CASES.keys())
def test_parse(text: str, reqs: tuple[selectors.Requirement, ...]) -> None:
    assert selectors.LabelSelector.parse(text) == selectors.LabelSelector(reqs)


PARSE_ERRORS = {
    "unbalanced-paren": "app in (a,b",
    "set-without-operator": "app (a)",
    "unknown-word": "app within (a)",
    "bang-with-value": "!env=prod",
    "bad-key": "bad$key=x",
    "bad-value": "env=not$valid",
    "exists-with-space-in-key": "my key",
}


@pytest.mark.parametrize("text", PARSE_ERRORS.values(), ids=PARSE_ERRORS.keys())
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValidationError):
        selectors.LabelSelector.parse(text)


def test_parsed_kubectl_example_matches_as_kubernetes_would() -> None:
    selector = selectors.LabelSelector.parse("env=prod,tier!=web,app in (a,b),app notin (c),!quarantine,team")
    assert selector.matches({"env": "prod", "app": "a", "team": "x"})
    assert selector.matches({"env": "prod", "app": "b", "team": "", "tier": "db"})
    assert not selector.matches({"env": "prod", "app": "a", "team": "x", "tier": "web"})
    assert not selector.matches({"env": "prod", "app": "a", "team": "x", "quarantine": "true"})
    assert not selector.matches({"env": "prod", "app": "a"})
    assert not selector.matches({"env": "prod", "team": "x"})


@given(gen.label_selectors)
def test_str_parses_back(selector: selectors.LabelSelector) -> None:
    if selector.requirements:
        assert selectors.LabelSelector.parse(str(selector)) == selector
    else:
        assert str(selector) == "<all workloads>"


@given(gen.requirements())
def test_requirement_str_parses_back(req: selectors.Requirement) -> None:
    assert selectors.LabelSelector.parse(str(req)).requirements == (req,)


def test_peer_str_forms() -> None:
    net = addresses.network
    assert str(selectors.SelectorPeer(selectors.LabelSelector.parse("app=web"))) == "{app=web}"
    assert str(selectors.IpListPeer("partners")) == "iplist:partners"
    assert str(selectors.AnyPeer()) == "any"
    peer = selectors.CidrPeer((net("10.0.0.0/8"),), (net("10.1.0.0/16"),))
    assert str(peer) == "cidr:10.0.0.0/8 except 10.1.0.0/16"


CIDR_PEERS = {
    "no-except": (("10.0.0.0/24",), (), ["10.0.0.0/24"]),
    "except-half": (("10.0.0.0/24",), ("10.0.0.128/25",), ["10.0.0.0/25"]),
    "except-one-host": (("10.0.0.0/30",), ("10.0.0.1/32",), ["10.0.0.0/32", "10.0.0.2/31"]),
    "except-everything": (("10.0.0.0/24",), ("10.0.0.0/24",), []),
    "except-in-second-cidr": (
        ("10.0.0.0/24", "192.168.0.0/24"),
        ("192.168.0.0/25",),
        ["10.0.0.0/24", "192.168.0.128/25"],
    ),
    "v4-and-v6": (
        ("10.0.0.0/24", "2001:db8::/64"),
        ("2001:db8::/65",),
        ["10.0.0.0/24", "2001:db8:0:0:8000::/65"],
    ),
    "adjacent-merge": (("10.0.0.0/25", "10.0.0.128/25"), (), ["10.0.0.0/24"]),
}


@pytest.mark.parametrize(("cidrs", "excepts", "expected"), CIDR_PEERS.values(), ids=CIDR_PEERS.keys())
def test_cidr_peer_networks(cidrs: tuple[str, ...], excepts: tuple[str, ...], expected: list[str]) -> None:
    peer = selectors.CidrPeer(tuple(map(addresses.network, cidrs)), tuple(map(addresses.network, excepts)))
    assert peer.networks == [ipaddress.ip_network(n) for n in expected]


BAD_CIDR_PEERS = {
    "no-cidrs": ((), ()),
    "except-outside": (("10.0.0.0/24",), ("10.0.1.0/24",)),
    "except-wider-than-cidr": (("10.0.0.0/24",), ("10.0.0.0/16",)),
    "except-other-family": (("10.0.0.0/8",), ("::/0",)),
    "except-straddles-two-cidrs": (("10.0.0.0/25", "10.0.0.128/25"), ("10.0.0.0/24",)),
}


@pytest.mark.parametrize(("cidrs", "excepts"), BAD_CIDR_PEERS.values(), ids=BAD_CIDR_PEERS.keys())
def test_cidr_peer_rejects(cidrs: tuple[str, ...], excepts: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError):
        selectors.CidrPeer(tuple(map(addresses.network, cidrs)), tuple(map(addresses.network, excepts)))

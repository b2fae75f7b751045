"""Ruleset deltas: applying the delta from a to b to a's JSON gives exactly b, for any pair and any
chain of documents; and a delta that does not fit its base is refused, never half applied."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microseg.errors import ValidationError
from microseg.model import addresses, ruleset, rulesetdelta
from tests.model import strategies


def _hashed(doc: ruleset.RulesetDocument) -> ruleset.RulesetDocument:
    return doc.with_hash()


@st.composite
def successors(draw: st.DrawFn, doc: ruleset.RulesetDocument) -> ruleset.RulesetDocument:
    """`doc` after the kind of change a provision makes: entries replaced, inserted or dropped in
    place (the rest shared), set members moved, a set added or gone, the mode or version changed."""
    entry = strategies.entries(doc.tiers, tuple(s.name for s in doc.address_sets))
    ingress = list(doc.ingress)
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(ingress)))
        op = draw(st.sampled_from(["insert", "replace", "drop"]))
        if op == "insert" or not ingress:
            ingress.insert(at, draw(entry))
        elif op == "replace":
            ingress[min(at, len(ingress) - 1)] = draw(entry)
        else:
            del ingress[min(at, len(ingress) - 1)]
    sets = []
    for s in doc.address_sets:
        nets = set(s.networks) - set(draw(st.sets(st.sampled_from(s.networks)))) if s.networks else set()
        nets |= set(draw(st.lists(strategies.any_networks(), max_size=2)))
        sets.append(dataclasses.replace(s, networks=tuple(addresses.collapse(nets))))
    mode = draw(st.sampled_from([doc.mode, *type(doc.mode)]))
    return dataclasses.replace(doc, ingress=tuple(ingress), address_sets=tuple(sets), mode=mode,
                               policy_version=draw(st.sampled_from([doc.policy_version, "v43"])))  # fmt: skip


def _through_delta(differ: rulesetdelta.Differ, old: ruleset.RulesetDocument,
                   held: dict[str, object], new: ruleset.RulesetDocument) -> dict[str, object]:  # fmt: skip
    delta = json.loads(differ.delta(old, new))
    applied = rulesetdelta.apply(held, delta)
    parsed = ruleset.RulesetDocument.from_dict(applied)  # checks the hash
    assert parsed.hash == new.hash
    assert applied == new.to_dict()
    return applied


@settings(max_examples=300, deadline=None)
@given(strategies.documents(), strategies.documents())
def test_any_two_documents(a: ruleset.RulesetDocument, b: ruleset.RulesetDocument) -> None:
    a, b = _hashed(a), _hashed(b)
    _through_delta(rulesetdelta.Differ(), a, a.to_dict(), b)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_chain_of_changes_ends_where_fetching_whole_would(data: st.DataObject) -> None:
    differ = rulesetdelta.Differ()
    doc = _hashed(data.draw(strategies.documents()))
    held = doc.to_dict()
    for _ in range(data.draw(st.integers(1, 5))):
        nxt = _hashed(data.draw(successors(doc)))
        held = _through_delta(differ, doc, held, nxt)
        doc = nxt


@settings(max_examples=100, deadline=None)
@given(strategies.documents())
def test_a_one_entry_change_sends_that_entry_not_the_list(doc: ruleset.RulesetDocument) -> None:
    entry = ruleset.Entry("application/new", doc.tiers[0], doc.ingress[0].action if doc.ingress else
                          ruleset.Action.ALLOW, None, None, ())  # fmt: skip
    a = _hashed(dataclasses.replace(doc, ingress=(*doc.ingress, *doc.ingress)))
    b = _hashed(dataclasses.replace(a, ingress=(*a.ingress[:1], entry, *a.ingress[1:])))
    delta = json.loads(rulesetdelta.Differ().delta(a, b))
    assert delta["ingress"]["entries"] == [json.loads(entry.text)]
    assert "egress" not in delta and delta["addressSets"] == {}
    assert delta["changed"] == {}


def test_a_moved_address_is_sent_as_members() -> None:
    nets = tuple(addresses.network(f"10.9.{i}.7/32") for i in range(200))
    base = ruleset.RulesetDocument("web-1", (addresses.network("10.0.0.1/32"),), ruleset.Mode.ENFORCE, "v1",
                                   ("application",), (), (ruleset.AddressSet("s", nets),), (), ())  # fmt: skip
    a = _hashed(base)
    moved = (*nets[1:], addresses.network("10.10.0.1/32"))
    b = _hashed(dataclasses.replace(a, address_sets=(ruleset.AddressSet("s", moved),)))
    delta = json.loads(rulesetdelta.Differ().delta(a, b))
    assert delta["addressSets"] == {"s": {"add": ["10.10.0.1/32"], "remove": ["10.9.0.7/32"]}}
    assert rulesetdelta.apply(a.to_dict(), delta) == b.to_dict()


@settings(max_examples=100, deadline=None)
@given(strategies.documents(), strategies.documents(), strategies.documents())
def test_a_delta_for_another_base_is_refused(a: ruleset.RulesetDocument, b: ruleset.RulesetDocument,
                                            other: ruleset.RulesetDocument) -> None:  # fmt: skip
    a, b, other = _hashed(a), _hashed(b), _hashed(other)
    delta = json.loads(rulesetdelta.Differ().delta(a, b))
    if other.hash != a.hash:
        with pytest.raises(ValidationError, match="applies to"):
            rulesetdelta.apply(other.to_dict(), delta)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d.update(schema="other"),
        lambda d: d["changed"].update(hash="sha256:00"),
        lambda d: d.update(ingress={"keep": [50, 50], "entries": []}),
        lambda d: d.update(ingress={"keep": [-1, 0], "entries": []}),
        lambda d: d.update(addressSets={"s": {"add": [], "remove": ["192.0.2.0/24"]}}),
        lambda d: d.update(addressSets={"nosuch": {"add": ["192.0.2.0/24"], "remove": []}}),
        lambda d: d.update(addressSets={"s": {"add": ["not an address"], "remove": []}}),
        lambda d: d.pop("changed"),
    ],
)
def test_a_malformed_delta_is_a_validation_error(tamper: object) -> None:
    a = _hashed(ruleset.RulesetDocument("web-1", (addresses.network("10.0.0.1/32"),), ruleset.Mode.ENFORCE,
                                        "v1", ("application",), (),
                                        (ruleset.AddressSet("s", (addresses.network("10.9.0.0/24"),)),), (), ()))  # fmt: skip
    b = _hashed(dataclasses.replace(a, policy_version="v2"))
    delta = json.loads(rulesetdelta.Differ().delta(a, b))
    tamper(delta)  # type: ignore[operator]
    with pytest.raises(ValidationError):
        rulesetdelta.apply(a.to_dict(), delta)


def test_a_delta_whose_result_differs_fails_the_hash_check() -> None:
    a = _hashed(ruleset.RulesetDocument("web-1", (addresses.network("10.0.0.1/32"),), ruleset.Mode.ENFORCE,
                                        "v1", ("application",), (), (), (), ()))  # fmt: skip
    b = _hashed(dataclasses.replace(a, policy_version="v2"))
    delta = json.loads(rulesetdelta.Differ().delta(a, b))
    delta["changed"]["policyVersion"] = "v3"
    with pytest.raises(ValidationError, match="hash mismatch"):
        ruleset.RulesetDocument.from_dict(rulesetdelta.apply(a.to_dict(), delta))

"""The label index finds exactly the selectors that match a label set, as testing every selector
would, for any selectors and label sets (it only tests the ones that could match)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from microseg.engine import label_index
from microseg.model import labels, selectors

KEYS, VALUES = ("env", "app", "role", "zone"), ("a", "b", "c")
Op = selectors.Operator


@st.composite
def requirement(draw: st.DrawFn) -> selectors.Requirement:
    op = draw(st.sampled_from(list(Op)))
    values = (
        draw(st.lists(st.sampled_from(VALUES), min_size=1, max_size=2)) if op in (Op.IN, Op.NOT_IN) else []
    )
    return selectors.Requirement(draw(st.sampled_from(KEYS)), op, tuple(values))


selector = st.lists(requirement(), max_size=3).map(lambda rs: selectors.LabelSelector(tuple(rs)))
labelset = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES)).map(labels.Labels)


@settings(max_examples=200, deadline=None)
@given(st.lists(selector, max_size=12), st.lists(labelset, min_size=1, max_size=6))
def test_the_index_matches_what_testing_every_selector_matches(
    chosen: list[selectors.LabelSelector], sets: list[labels.Labels]
) -> None:
    named = {f"s{i}": s for i, s in enumerate(chosen)}
    index = label_index.LabelIndex(named)
    for identity in sets:
        if identity in index.selectors_by_identity:
            continue
        expected = frozenset(k for k, s in named.items() if s.matches(identity))
        assert index.on_identity_added(identity) == expected
        for k in expected:
            assert identity in index.identities_by_selector[k]


def test_a_selector_of_several_values_is_found_under_each_and_only_once() -> None:
    named = {
        "either": selectors.LabelSelector.parse("role in (web,db)"),
        "none": selectors.LabelSelector.parse("!team"),
    }
    index = label_index.LabelIndex(named)
    assert index.on_identity_added(labels.Labels.parse("role=db")) == {"either", "none"}
    assert index.on_identity_added(labels.Labels.parse("role=lb,team=x")) == frozenset()

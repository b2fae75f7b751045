"""Policy files carry attribute provenance (`spec.attributeSources`) and label-rule trust
(`spec.trust`): loaded with file:line:field errors, dumped back unchanged."""

from __future__ import annotations

import hypothesis
import pytest
from hypothesis import strategies as st

from microseg import policyfile
from microseg.model import addresses, estate, labelrules, workloads
from microseg.model.labels import Labels
from tests.policyfile import texts

BASE = texts.doc(
    "LabelRule",
    """\
    metadata: {name: db-by-hostname}
    spec:
      match: {hostname: "*-db-*"}
      labels: {role: db}
      trust: [operator, agent]
    """,
) + "---\n" + texts.doc(
    "Workload",
    """\
    metadata: {name: h1, labels: {env: dev}}
    spec:
      addresses: [10.77.2.50]
      attributes: {hostname: h1-db-1, os: linux}
      attributeSources: {hostname: agent, os: enrollment}
      mode: enforce
    """,
)  # fmt: skip


def test_sources_and_trust_load() -> None:
    est = policyfile.load_text(BASE)
    assert est.label_rules[0].trust == frozenset({"operator", "agent"})
    assert dict(est.workloads[0].attribute_sources) == {"hostname": "agent", "os": "enrollment"}
    assert labelrules.effective_labels(est.workloads[0], est.label_rules)["role"] == "db"


def test_without_trust_a_rule_ignores_what_the_agent_said() -> None:
    est = policyfile.load_text(BASE.replace("  trust: [operator, agent]\n", ""))
    assert est.label_rules[0].trust == labelrules.DEFAULT_TRUST
    assert "role" not in labelrules.effective_labels(est.workloads[0], est.label_rules)


# (id, old text in BASE, new text, field, words)
MISTAKES = [
    ("unknown-source", "hostname: agent,", "hostname: root,", "spec.attributeSources.hostname",
     "'root' is not one of operator, enrollment, agent"),
    ("empty-source", "hostname: agent,", "hostname: ,", "spec.attributeSources.hostname", "expected non-empty text"),
    ("sources-not-a-mapping", "attributeSources: {hostname: agent, os: enrollment}", "attributeSources: [agent]",
     "spec.attributeSources", "expected a mapping"),
    ("unknown-trust", "trust: [operator, agent]", "trust: [operator, agnet]", "spec.trust[1]",
     "did you mean 'agent'?"),
    ("trust-not-a-list", "trust: [operator, agent]", "trust: {agent: yes}", "spec.trust", "expected a list"),
    ("trust-nobody", "trust: [operator, agent]", "trust: []", "spec.trust", "trust names no source"),
    ("misspelt-field", "trust: [operator, agent]", "trusts: [agent]", "spec.trusts", "did you mean 'trust'?"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("old", "new", "field", "words"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES]
)
def test_mistakes_are_located(old: str, new: str, field: str, words: str) -> None:
    text = BASE.replace(old, new)
    assert text != BASE
    line = text[: text.index(new)].count("\n") + 1
    found = texts.problems(text)
    assert any(p.line == line and p.field == field and words in p.message for p in found), (line, found)


def test_the_default_trust_is_not_written_and_other_trust_is_written_in_a_fixed_order() -> None:
    est = policyfile.load_text(BASE.replace("[operator, agent]", "[agent, enrollment, operator]"))
    assert "trust:\n  - operator\n  - enrollment\n  - agent\n" in policyfile.dump(est)
    plain = policyfile.load_text(BASE.replace("[operator, agent]", "[enrollment, operator]"))
    assert "trust" not in policyfile.dump(plain)


def test_the_dump_writes_sources_after_attributes() -> None:
    text = policyfile.dump(policyfile.load_text(BASE))
    written = "  attributes:\n    hostname: h1-db-1\n    os: linux\n"
    written += "  attributeSources:\n    hostname: agent\n    os: enrollment\n  mode: enforce\n"
    assert written in text


SOURCES = st.sampled_from([p.value for p in workloads.Provenance])
NAMES = st.sampled_from(["hostname", "os", "kernel", "cloud.region"])


@st.composite
def provenance_estates(draw: st.DrawFn) -> estate.Estate:
    """Workloads with random attributes and sources (also for absent attributes), rules with random trust."""
    found = []
    for i in range(draw(st.integers(1, 5))):
        attrs = draw(st.dictionaries(NAMES, st.sampled_from(["h1-db-1", "linux", "6.1"]), max_size=3))
        sources = draw(st.dictionaries(NAMES, SOURCES, max_size=4))
        nets = (addresses.network(f"10.9.0.{i + 1}"),)
        found.append(workloads.Workload(f"w{i}", addresses=nets, attributes=attrs, attribute_sources=sources))
    rules = tuple(
        labelrules.LabelRule(f"r{i}", Labels({"role": f"v{i}"}), hostname_glob="*-db-*", trust=trust)
        for i, trust in enumerate(draw(st.lists(st.frozensets(SOURCES, min_size=1), max_size=4)))
    )
    return estate.Estate(workloads=tuple(found), label_rules=rules)


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(provenance_estates())
def test_round_trip(est: estate.Estate) -> None:
    text = policyfile.dump(est)
    loaded = policyfile.load_text(text)
    assert loaded.workloads == est.workloads and loaded.label_rules == est.label_rules
    assert policyfile.dump(loaded) == text

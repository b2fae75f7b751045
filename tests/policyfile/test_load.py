"""Loading policy files: the examples load, and every kind of mistake is reported at once with
file, line and field path, while nothing is loaded."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

import pytest

from microseg import errors, policyfile
from microseg.cli import loading
from microseg.model import rules, selectors, services, workloads
from microseg.policyfile import synthetic

HEAD = "apiVersion: microseg.io/v1\n"


def problems(text: str, name: str = "p.yaml") -> list[errors.Problem]:
    with pytest.raises(errors.PolicyFileError) as caught:
        policyfile.load_text(textwrap.dedent(text), name)
    return caught.value.problems


def test_examples_load() -> None:
    est = policyfile.load([loading.examples_dir()])
    names = {w.name for w in est.workloads}
    assert {"prod-db-1", "dev-web-1", "legacy-billing"} <= names
    assert est.workload("legacy-billing").kind is workloads.WorkloadKind.UNMANAGED  # type: ignore[union-attr]
    assert est.quarantine_allow == "forensics" and est.control_plane
    mysql = next(s for s in est.services if s.name == "mysql")
    assert mysql.process == "mysqld"
    guard = next(r for r in est.rules if r.name == "dev-never-reaches-prod")
    assert (guard.tier, guard.action, guard.policy) == ("security", rules.Action.DENY, "env-separation")


POLICY = (
    HEAD
    + """\
kind: Policy
metadata: {name: p}
spec:
  tier: application
  rules:
    - name: a
      priority: 1
      action: allow
      from: [{selector: "role=web"}]
      to: [{selector: {matchLabels: {role: db}, matchExpressions: [{key: env, operator: NotIn, values: [dev]}]}}]
      services: [{port: 3306}, {port: 8000, endPort: 8100, protocol: udp}]
      notAfter: 2026-12-31T00:00:00Z
"""
)


def test_policy_fields_are_built() -> None:
    rule = policyfile.load_text(POLICY).rules[0]
    dst = rule.destinations[0]
    assert isinstance(dst, selectors.SelectorPeer) and str(dst.selector) == "env!=dev,role=db"
    assert [str(s) for s in rule.services] == ["3306/tcp", "8000-8100/udp"]
    assert rule.not_after is not None and rule.not_after.year == 2026 and rule.owner == ""


# (id, yaml text, expected line, expected field, words in the message)
CASES = [
    ("bad-address", HEAD + "kind: Workload\nmetadata: {name: w}\nspec:\n  addresses: [10.77.0.300]\n",
     5, "spec.addresses[0]", "not an IP address"),
    ("unknown-field-suggestion", HEAD + "kind: Service\nmetadata: {name: s}\nspec:\n  prots: [{port: 1}]\n",
     5, "spec.prots", "did you mean 'ports'"),
    ("missing-required", HEAD + "kind: Service\nmetadata: {name: s}\nspec: {}\n", 4, "spec", "missing required field 'ports'"),
    ("bad-label-value", HEAD + "kind: Workload\nmetadata: {name: w, labels: {env: 'bad value'}}\n"
     "spec: {addresses: [10.77.0.1]}\n", 3, "metadata.labels", "value must be empty or 1-63"),
    ("unknown-kind", HEAD + "kind: Nonsense\nmetadata: {name: x}\n", 2, "kind", "unknown kind"),
    ("wrong-api-version", "apiVersion: v9\nkind: Workload\n", 1, "apiVersion", "unsupported apiVersion"),
    ("unknown-service", POLICY.replace("services: [{port: 3306}, {port: 8000, endPort: 8100, protocol: udp}]",
     "services: [mysq]"), 12, "spec.rules[0].services[0]", "unknown service 'mysq'"),
    ("unknown-tier", POLICY.replace("tier: application", "tier: aplication"), 5, "spec.tier", "did you mean 'application'"),
    ("bad-action", POLICY.replace("action: allow", "action: permit"), 9, "spec.rules[0].action", "not one of allow"),
    ("bad-selector", POLICY.replace('"role=web"', '"role in web"'), 10, "spec.rules[0].from[0].selector", "cannot parse"),
    ("naive-time", POLICY.replace("2026-12-31T00:00:00Z", "'2026-12-31T00:00:00'"), 13, "spec.rules[0].notAfter",
     "time zone"),
    ("bad-port", POLICY.replace("{port: 3306}", "{port: 70000}"), 12, "spec.rules[0].services[0].port", "1-65535"),
    ("yaml-syntax", HEAD + "kind: Workload\nmetadata: {name: [\n", 4, "", "YAML syntax error"),
    ("unknown-ip-list", POLICY.replace('{selector: "role=web"}', "{ipList: partners}"), 10,
     "spec.rules[0].from[0].ipList", "unknown ip list 'partners'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "line", "field", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_mistake_is_located(text: str, line: int, field: str, words: str) -> None:
    found = problems(text)
    assert any(p.line == line and p.field == field and words in p.message for p in found), found


def test_cross_document_checks() -> None:
    text = HEAD + textwrap.dedent("""\
        kind: List
        items:
          - {apiVersion: microseg.io/v1, kind: Workload, metadata: {name: a}, spec: {addresses: [10.77.0.1]}}
          - {apiVersion: microseg.io/v1, kind: Workload, metadata: {name: a}, spec: {addresses: [10.77.0.2]}}
          - {apiVersion: microseg.io/v1, kind: Workload, metadata: {name: net}, spec: {kind: unmanaged, addresses: [10.77.0.0/24]}}
          - {apiVersion: microseg.io/v1, kind: Tier, metadata: {name: extra}, spec: {order: 200}}
          - apiVersion: microseg.io/v1
            kind: Policy
            metadata: {name: p}
            spec:
              tier: application
              rules:
                - {name: r1, priority: 5, action: allow, from: any, to: any, services: any}
                - {name: r2, priority: 5, action: allow, from: any, to: any, services: any}
                - {name: r1, priority: 6, action: deny, from: any, to: any, services: any}
        """)  # fmt: skip
    found = {(p.line, p.field): p.message for p in problems(text)}
    assert "duplicate Workload name a" in found[(5, "metadata.name")]
    assert "overlaps" in found[(6, "spec.addresses")]
    assert "tier order 200" in found[(7, "spec.order")]
    assert "priority 5 is already used by rule r1" in found[(15, "spec.rules[1].priority")]
    assert "duplicate rule name r1" in found[(16, "spec.rules[2].name")]


def test_problems_in_several_files_all_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        HEAD + "kind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 0}]}\n"
    )
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "b.yml").write_text(HEAD + "kind: Workload\nmetadata: {name: w}\nspec: {addresses: [nope]}\n")
    (tmp_path / "ignored.txt").write_text("not yaml at all: [")
    with pytest.raises(errors.PolicyFileError) as caught:
        policyfile.load([tmp_path])
    files = {Path(p.file).name for p in caught.value.problems}
    assert files == {"a.yaml", "b.yml"}
    assert "2 problems" in str(caught.value) and "nothing was loaded" in str(caught.value)


def test_round_trip_examples() -> None:
    est = policyfile.load([loading.examples_dir()])
    again = policyfile.load_text(policyfile.dump(est), "dumped.yaml")
    assert sorted(again.workloads, key=lambda w: w.name) == sorted(est.workloads, key=lambda w: w.name)
    assert set(again.rules) == set(est.rules)
    assert (again.control_plane, again.quarantine_allow) == (est.control_plane, est.quarantine_allow)
    assert set(again.ip_lists) == set(est.ip_lists) and set(again.label_rules) == set(est.label_rules)


def test_dump_is_stable_whatever_the_order() -> None:
    est = synthetic.generate(200, 20, 60, seed=3)
    shuffled = list(est.workloads)
    random.Random(1).shuffle(shuffled)
    rules_shuffled = list(est.rules)
    random.Random(2).shuffle(rules_shuffled)
    other = est.with_workloads(tuple(shuffled)).with_rules(tuple(rules_shuffled))
    assert policyfile.dump(est) == policyfile.dump(other)
    again = policyfile.load_text(policyfile.dump(est))
    assert set(again.rules) == set(est.rules) and set(again.workloads) == set(est.workloads)


def test_synthetic_counts_and_determinism() -> None:
    a = synthetic.generate(1000, 50, 100, seed=7)
    assert len(a.workloads) == 1000 and len({w.labels for w in a.workloads}) == 50 and len(a.rules) == 100
    assert len({(r.tier, r.priority) for r in a.rules}) == 100
    assert a == synthetic.generate(1000, 50, 100, seed=7)
    assert a != synthetic.generate(1000, 50, 100, seed=8)
    assert {r.action for r in a.rules} >= {rules.Action.ALLOW, rules.Action.DENY}
    assert any(s.protocol is services.Protocol.TCP for svc in a.services for s in svc.specs)

"""Equal priorities in a tier: fine where the order cannot change an outcome (one action, or no
flow both rules match), refused where it can, naming both rules with file:line each."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from microseg import errors, policyfile

POLICY = """\
apiVersion: microseg.io/v1
kind: Policy
metadata: {{name: {policy}}}
spec:
  tier: application
  rules:
    - name: {name}
      priority: 100
      action: {action}
      from: [{{selector: "{source}"}}]
      to: [{{selector: role=db}}]
      services: [{{port: {port}, protocol: tcp}}]
"""


def write(
    tmp_path: Path, policy: str, name: str, action: str, source: str = "role=web", port: int = 3306
) -> Path:
    path = tmp_path / f"{policy}.yaml"
    path.write_text(POLICY.format(policy=policy, name=name, action=action, source=source, port=port))
    return path


def test_one_priority_and_one_action_across_teams_loads(tmp_path: Path) -> None:
    write(tmp_path, "team-a", "web-to-db", "allow")
    write(tmp_path, "team-b", "app-to-db", "allow", source="role=app")
    est = policyfile.load([tmp_path])
    assert sorted((r.priority, r.name) for r in est.rules) == [(100, "app-to-db"), (100, "web-to-db")]


@pytest.mark.parametrize(
    ("source", "port"),
    [("role=app", 3306), ("role=web", 5432)],
    ids=["other-sources", "other-port"],
)
def test_one_priority_and_other_actions_on_flows_no_rule_shares_loads(
    tmp_path: Path, source: str, port: int
) -> None:
    write(tmp_path, "team-a", "web-to-db", "allow")
    write(tmp_path, "team-b", "block", "deny", source=source, port=port)
    assert len(policyfile.load([tmp_path]).rules) == 2


def test_overlapping_rules_with_one_priority_and_other_actions_are_refused_naming_both(
    tmp_path: Path,
) -> None:
    write(tmp_path, "team-a", "web-to-db", "allow")
    write(tmp_path, "team-b", "no-prod-db", "deny", source="env=prod")
    with pytest.raises(errors.PolicyFileError) as caught:
        policyfile.load([tmp_path])
    at_a, at_b = caught.value.problems  # at both rules, each naming the other: neither is more to blame
    assert (Path(at_a.file).name, at_a.line, at_a.field) == ("team-a.yaml", 8, "spec.rules[0].priority")
    assert (Path(at_b.file).name, at_b.line, at_b.field) == ("team-b.yaml", 8, "spec.rules[0].priority")
    assert at_b.message.startswith(
        f"rule no-prod-db (deny) and rule web-to-db (allow, {tmp_path / 'team-a.yaml'}:8) both have priority 100 "
        "in tier application and can match the same flow"
    )
    assert at_a.message.startswith(
        f"rule web-to-db (allow) and rule no-prod-db (deny, {tmp_path / 'team-b.yaml'}:8)"
    )


def test_the_same_check_holds_for_api_data_without_lines() -> None:
    docs = [
        {"apiVersion": "microseg.io/v1", "kind": "Policy", "metadata": {"name": "p"},
         "spec": {"tier": "security", "rules": [
             {"name": "a", "priority": 5, "action": "allow", "from": "any", "to": "any", "services": "any"},
             {"name": "b", "priority": 5, "action": "pass", "from": "any", "to": "any", "services": "any"},
         ]}},
    ]  # fmt: skip
    with pytest.raises(errors.PolicyFileError) as caught:
        policyfile.load_data({"apiVersion": "microseg.io/v1", "kind": "List", "items": docs}, "api")
    messages = sorted(p.message.split(" both")[0] for p in caught.value.problems)
    assert messages == ["rule a (allow) and rule b (pass)", "rule b (pass) and rule a (allow)"]


def test_other_tiers_never_clash() -> None:
    text = textwrap.dedent("""\
        apiVersion: microseg.io/v1
        kind: Policy
        metadata: {name: guard}
        spec:
          tier: security
          rules: [{name: a, priority: 1, action: deny, from: any, to: any, services: any}]
        ---
        apiVersion: microseg.io/v1
        kind: Policy
        metadata: {name: app}
        spec:
          tier: application
          rules: [{name: b, priority: 1, action: allow, from: any, to: any, services: any}]
        """)
    assert len(policyfile.load_text(text).rules) == 2

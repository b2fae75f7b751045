"""Dumping: `load(dump(e)) == e`, the same meaning always gives the same text whatever the order it
was written or built in, and the text reads like a person wrote it (names, not copies; `any` bare;
times in UTC)."""

from __future__ import annotations

import dataclasses
import random
import re
import textwrap
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar, cast

import hypothesis
import pytest
import yaml
from hypothesis import strategies as st

from microseg import errors, policyfile
from microseg.model import estate, rules, selectors, services, tiers
from microseg.policyfile import canonical, dumper, synthetic
from tests.policyfile import texts

T = TypeVar("T")


@pytest.fixture(scope="module")
def examples() -> estate.Estate:
    return policyfile.load([texts.examples()])


def example_documents() -> list[str]:
    """Every document of the example files, as text."""
    docs = []
    for path in sorted(texts.examples().rglob("*.yaml")):
        docs += [d for d in re.split(r"^---$", path.read_text(), flags=re.MULTILINE) if "kind:" in d]
    return docs


def test_round_trip_examples(examples: estate.Estate) -> None:
    assert policyfile.load_text(policyfile.dump(examples)) == examples


@pytest.mark.parametrize(
    ("seed", "count", "label_sets", "rule_count"),
    [(0, 200, 20, 60), (1, 500, 50, 300), (7, 1_000, 300, 500), (42, 60, 60, 200)],
    ids=["small", "medium", "many-label-sets", "more-rules-than-workloads"],
)
def test_round_trip_generated(seed: int, count: int, label_sets: int, rule_count: int) -> None:
    est = synthetic.generate(count, label_sets, rule_count, seed=seed)
    assert policyfile.load_text(policyfile.dump(est)) == est


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(
    seed=st.integers(0, 2**32),
    label_sets=st.integers(1, 20),
    extra=st.integers(0, 40),
    rule_count=st.integers(0, 80),
)
def test_round_trip_any_seed(seed: int, label_sets: int, extra: int, rule_count: int) -> None:
    est = synthetic.generate(label_sets + extra, label_sets, rule_count, seed=seed)
    text = policyfile.dump(est)
    assert policyfile.load_text(text) == est and policyfile.dump(policyfile.load_text(text)) == text


def test_dump_dir_round_trip_and_layout(tmp_path: Path, examples: estate.Estate) -> None:
    written = policyfile.dump_dir(examples, tmp_path / "out")
    names = sorted(str(p.relative_to(tmp_path / "out")) for p in written)
    assert names == [
        "invariants.yaml", "iplists.yaml", "label-rules.yaml", "policies/crm-dev.yaml", "policies/crm-prod.yaml",
        "policies/env-separation.yaml", "policies/shared-services.yaml", "services.yaml", "settings.yaml",
        "workloads.yaml",
    ]  # fmt: skip
    assert policyfile.load([tmp_path / "out"]) == examples


def test_dump_dir_refuses_to_mix_with_existing_files(tmp_path: Path, examples: estate.Estate) -> None:
    (tmp_path / "policies").mkdir()
    stale = tmp_path / "policies" / "retired.yaml"
    stale.write_text(texts.doc("Tier", "metadata: {name: retired}\nspec: {order: 999}\n"))
    with pytest.raises(errors.UserError, match="already holds 1 policy file"):
        policyfile.dump_dir(examples, tmp_path)
    policyfile.dump_dir(examples, tmp_path, replace=True)
    assert not stale.exists() and policyfile.load([tmp_path]) == examples


def test_dumping_twice_gives_the_same_text(examples: estate.Estate) -> None:
    assert policyfile.dump(examples) == policyfile.dump(examples)


@pytest.mark.parametrize("seed", range(5))
def test_document_order_does_not_matter(seed: int, examples: estate.Estate) -> None:
    docs = example_documents()
    random.Random(seed).shuffle(docs)
    shuffled = policyfile.load_text("\n---\n".join(d.strip("\n") for d in docs))
    assert shuffled == examples and policyfile.dump(shuffled) == policyfile.dump(examples)


def test_list_order_inside_a_document_does_not_matter() -> None:
    def policy(peers: str, svcs: str, cidrs: str) -> str:
        return (
            texts.doc("IPList", f"metadata: {{name: l}}\nspec: {{cidrs: [{cidrs}]}}\n")
            + "---\n"
            + texts.doc(
                "Policy",
                f"""\
            metadata: {{name: p}}
            spec:
              tier: application
              rules:
                - {{name: r, priority: 1, action: allow, from: [{peers}], to: any, services: [{svcs}]}}
            """,
            )
        )

    one = policyfile.load_text(policy('{ipList: l}, {selector: "a=b"}, any', "{port: 80}, {port: 53, protocol: udp}",
                                      "10.0.0.0/8, 10.1.0.0/16"))  # fmt: skip
    other = policyfile.load_text(policy('any, {selector: "a=b"}, {ipList: l}', "{port: 53, protocol: udp}, {port: 80}",
                                        "10.1.0.0/16, 10.0.0.0/8"))  # fmt: skip
    assert one == other and policyfile.dump(one) == policyfile.dump(other)


def test_build_order_of_an_estate_does_not_matter() -> None:
    est = synthetic.generate(300, 30, 120, seed=3)
    rnd = random.Random(1)

    def shuffled(items: tuple[T, ...]) -> tuple[T, ...]:
        return tuple(rnd.sample(items, len(items)))

    other = dataclasses.replace(
        est,
        workloads=shuffled(est.workloads),
        rules=tuple(dataclasses.replace(r, sources=shuffled(r.sources)) for r in shuffled(est.rules)),
        services=shuffled(est.services),
        ip_lists=shuffled(est.ip_lists),
    )
    assert policyfile.dump(other) == policyfile.dump(est)


def test_libyaml_and_pure_python_write_the_same_text(monkeypatch: pytest.MonkeyPatch) -> None:
    est = synthetic.generate(300, 30, 120, seed=5)
    fast = policyfile.dump(est)
    monkeypatch.setattr(dumper, "_DUMPER", yaml.SafeDumper)
    assert policyfile.dump(est) == fast


def only(text: str, kind: str) -> dict[str, Any]:
    """The one document of `kind` in a dump."""
    (found,) = [d for d in yaml.safe_load_all(text) if d["kind"] == kind]
    return cast(dict[str, Any], found)


MYSQL = services.Service(
    "mysql", (services.PortSpec(services.Protocol.TCP, (services.PortRange(3306, 3306),)),)
)
WEB = selectors.SelectorPeer(selectors.LabelSelector.parse("role=web"))


def a_rule(name: str, priority: int, **changes: object) -> rules.Rule:
    base = rules.Rule(name, "application", priority, rules.Action.ALLOW, (WEB,), (selectors.AnyPeer(),), (MYSQL,),
                      policy="p", owner="team")  # fmt: skip
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_rules_come_by_priority_then_name_with_names_and_bare_any() -> None:
    est = estate.Estate(services=(MYSQL,), rules=(a_rule("b", 20), a_rule("z", 10), a_rule("a", 20)))
    policy = only(policyfile.dump(est), "Policy")
    assert policy["spec"] == {
        "tier": "application",
        "owner": "team",
        "rules": [
            {"name": n, "priority": p, "action": "allow", "from": [{"selector": "role=web"}], "to": "any",
             "services": ["mysql"]}
            for n, p in (("z", 10), ("a", 20), ("b", 20))
        ],
    }  # fmt: skip


def test_inline_ports_stay_inline_and_undeclared_services_are_declared() -> None:
    inline = services.Service(
        "inline:8443/tcp", (services.PortSpec(services.Protocol.TCP, (services.PortRange(8443, 8443),)),)
    )
    custom = dataclasses.replace(MYSQL, name="custom", process="mysqld")
    est = estate.Estate(rules=(a_rule("r", 1, services=(inline, custom, services.ANY_SERVICE)),))
    text = policyfile.dump(est)
    assert only(text, "Policy")["spec"]["rules"][0]["services"] == [
        "any",
        "custom",
        {"port": 8443, "protocol": "tcp"},
    ]
    assert only(text, "Service")["spec"] == {
        "ports": [{"port": 3306, "protocol": "tcp"}],
        "process": "mysqld",
    }
    again = policyfile.load_text(text)
    assert again.rules == canonical.ordered(est).rules and again.services == (custom,)


def test_a_rule_using_a_service_that_contradicts_its_declaration_cannot_be_written() -> None:
    est = estate.Estate(
        services=(MYSQL,), rules=(a_rule("r", 1, services=(dataclasses.replace(MYSQL, process="x"),)),)
    )
    with pytest.raises(errors.ValidationError, match="differs from the service of that name"):
        policyfile.dump(est)


def test_times_are_written_in_utc() -> None:
    summer = timezone(timedelta(hours=2))
    start, end = datetime(2026, 7, 1, tzinfo=summer), datetime(2026, 8, 1, 12, 30, 5, 250000, tzinfo=UTC)
    est = estate.Estate(services=(MYSQL,), rules=(a_rule("r", 1, not_before=start, not_after=end),))
    text = policyfile.dump(est)
    assert "notBefore: '2026-06-30T22:00:00Z'" in text and "notAfter: '2026-08-01T12:30:05.250000Z'" in text
    assert policyfile.load_text(text).rules == est.rules


def test_owners_reasons_and_disabled_rules() -> None:
    est = estate.Estate(services=(MYSQL,), rules=(
        a_rule("r1", 1), a_rule("r2", 2, owner="dba", reason="why", enabled=False), a_rule("r3", 3, owner=""),
    ))  # fmt: skip
    spec = only(policyfile.dump(est), "Policy")["spec"]
    assert "owner" not in spec  # three owners: each rule says its own
    got = [{k: r.get(k) for k in ("owner", "reason", "enabled")} for r in spec["rules"]]
    assert got == [
        {"owner": "team", "reason": None, "enabled": None},
        {"owner": "dba", "reason": "why", "enabled": False},
        {"owner": None, "reason": None, "enabled": None},
    ]
    assert policyfile.load_text(policyfile.dump(est)).rules == est.rules


def test_rules_without_a_policy_and_tiers() -> None:
    platform = tiers.Tier(250, "platform")
    moved = dataclasses.replace(tiers.BUILTIN_TIERS[1], order=240)
    est = estate.Estate(
        services=(MYSQL,),
        tiers=(tiers.BUILTIN_TIERS[0], moved, platform, tiers.BUILTIN_TIERS[2]),
        rules=(a_rule("r", 1, policy="", tier="platform"),),
    )
    text = policyfile.dump(est)
    assert [d["metadata"]["name"] for d in yaml.safe_load_all(text) if d["kind"] == "Tier"] == [
        "security",
        "platform",
    ]
    assert only(text, "Policy")["metadata"] == {"name": "platform-rules"}
    assert policyfile.load_text(text).tiers == tuple(sorted(est.tiers))


def test_the_dump_reads_like_the_format_reference() -> None:
    est = policyfile.load_text(textwrap.dedent(texts.doc("Workload", """\
        metadata: {name: w, labels: {version: 1.10, env: prod}}
        spec: {addresses: [10.77.0.1], attributes: {port: 80}, mode: enforce}
        """)))  # fmt: skip
    assert policyfile.dump(est) == textwrap.dedent("""\
        apiVersion: microseg.io/v1
        kind: Workload
        metadata:
          name: w
          labels:
            env: prod
            version: '1.10'
        spec:
          kind: vm
          addresses:
          - 10.77.0.1
          attributes:
            port: '80'
          mode: enforce
        """)

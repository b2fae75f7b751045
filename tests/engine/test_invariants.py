"""Invariants: a policy is checked against them exactly (every class pair, every port stretch,
every moment a timed rule changes), and single observed connections are matched against them."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from microseg import errors, policyfile
from microseg.engine import engine, invariants
from microseg.model import services
from tests.policyfile import texts

TCP = services.Protocol.TCP


def guard(tmp_path: Path, extra: str = "", *, without_security: bool = False) -> invariants.Guard:
    """The example estate (which declares two invariants) plus `extra` policy documents."""
    (tmp_path / "extra.yaml").write_text(textwrap.dedent(extra) or "# nothing\n")
    est = policyfile.load([texts.examples(), tmp_path / "extra.yaml"])
    if without_security:
        est = est.with_rules(tuple(r for r in est.rules if r.tier != "security"))
    return invariants.Guard(engine.PolicyEngine(est))


def allow(name: str, src: str, dst: str, services: str, *, priority: int = 900, extra: str = "") -> str:
    return f"""
        ---
        apiVersion: microseg.io/v1
        kind: Policy
        metadata: {{name: {name}}}
        spec:
          tier: application
          rules:
            - {{name: {name}, priority: {priority}, action: allow, from: {src}, to: {dst},
                services: {services}{extra}}}
        """


def test_the_example_estate_keeps_its_invariants(tmp_path: Path) -> None:
    g = guard(tmp_path)
    assert [i.name for i in g.declared] == ["dev-never-reaches-prod", "only-bastion-ssh"]
    assert g.check() == []


def test_an_allow_under_the_guard_rail_is_not_a_violation(tmp_path: Path) -> None:
    # the security tier's deny decides first, so dev still never reaches prod
    g = guard(
        tmp_path, allow("oops", '[{selector: "env=dev,role=web"}]', '[{selector: "role=db"}]', "[mysql]")
    )
    assert g.check() == []


def test_a_policy_that_lets_dev_reach_prod_breaks_the_invariant(tmp_path: Path) -> None:
    g = guard(
        tmp_path,
        allow("oops", '[{selector: "env=dev,role=web"}]', '[{selector: "role=db"}]', "[mysql]"),
        without_security=True,
    )
    found = g.check()
    assert {v.invariant for v in found} == {"dev-never-reaches-prod"}
    [v] = [v for v in found if "prod-db-1" in v.destinations]
    assert v.sources == ("dev-web-1",)
    assert v.port == "3306/tcp"
    assert v.verdict.rule == "application/oops"
    assert v.at is None
    assert "dev-web-1 -> prod-db-1 on 3306/tcp allowed by application/oops" in str(v)


def test_only_catches_an_external_source_through_an_ip_list(tmp_path: Path) -> None:
    g = guard(tmp_path, allow("vpn-ssh", "[{ipList: corp-users}]", '[{selector: "role=web"}]', "[ssh]"))
    found = g.check()
    assert {v.invariant for v in found} == {"only-bastion-ssh"}
    sources = {s for v in found for s in v.sources}
    assert sources and all(s.startswith("10.77.200.") for s in sources)  # a corp-users address
    assert {v.port for v in found} == {"22/tcp"}


def test_a_port_range_that_covers_the_port_is_caught(tmp_path: Path) -> None:
    # 20-30 starts below 22: trying only each rule's first port would miss it
    g = guard(
        tmp_path,
        allow("range", '[{selector: "role=app"}]', '[{selector: "role=cache"}]', "[{port: 20, endPort: 30}]"),
    )
    found = g.check()
    assert {v.invariant for v in found} == {"only-bastion-ssh"}
    assert {v.port for v in found} == {"22/tcp"}


def test_a_range_beside_the_port_is_not_a_violation(tmp_path: Path) -> None:
    g = guard(
        tmp_path,
        allow(
            "beside", '[{selector: "role=app"}]', '[{selector: "role=cache"}]', "[{port: 23, endPort: 30}]"
        ),
    )
    assert g.check() == []


def test_a_rule_that_starts_later_is_a_violation_from_then(tmp_path: Path) -> None:
    start = (datetime.now(UTC) + timedelta(days=7)).replace(microsecond=0)
    when = start.isoformat().replace("+00:00", "Z")
    g = guard(
        tmp_path,
        allow(
            "later",
            '[{selector: "role=app"}]',
            '[{selector: "role=cache"}]',
            "[ssh]",
            extra=f", notBefore: '{when}'",
        ),
    )
    [v] = [v for v in g.check() if "prod-cache-1" in v.destinations]
    assert v.invariant == "only-bastion-ssh"
    assert v.at == start
    assert v.to_dict()["from"] == start.isoformat()


def test_flows_are_matched_by_labels_and_ports(tmp_path: Path) -> None:
    g = guard(tmp_path)
    eng = g.eng

    def broken(src: str, dst: str, port: int) -> list[str]:
        return [i.name for i in g.broken_by_flow(eng.endpoint(src), eng.endpoint(dst), port, TCP)]

    assert broken("dev-web-1", "prod-db-1", 3306) == ["dev-never-reaches-prod"]
    assert broken("prod-web-1", "prod-db-1", 3306) == []
    assert broken("prod-web-1", "prod-db-1", 22) == ["only-bastion-ssh"]
    assert broken("dev-web-1", "prod-db-1", 22) == ["dev-never-reaches-prod", "only-bastion-ssh"]
    bastion = next(n for n in eng.workload_names() if eng.effective_labels(n).get("role") == "bastion")
    assert broken(bastion, "prod-db-1", 22) == []
    assert broken("203.0.113.9", "prod-web-1", 22) == ["only-bastion-ssh"]  # an unknown address
    assert broken("prod-web-1", "prod-web-1", 22) == []  # a workload always reaches itself


@pytest.mark.parametrize(
    ("doc", "field", "message"),
    [
        ("type: sometimes\n  from: any", "spec.type", "sometimes"),
        ("type: never", "spec", "from"),
        ("type: never\n  from: any\n  services: [mysq]", "spec.services[0]", "unknown service 'mysq'"),
        ("type: never\n  from: [{ipList: nope}]", "spec.from[0].ipList", "unknown ip list 'nope'"),
        ("type: never\n  from: any\n  color: red", "spec.color", "color"),
    ],
)
def test_a_wrong_invariant_is_reported_with_file_line_and_field(
    tmp_path: Path, doc: str, field: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"apiVersion: microseg.io/v1\nkind: Invariant\nmetadata: {{name: bad}}\nspec:\n  {doc}\n")
    with pytest.raises(errors.PolicyFileError) as caught:
        policyfile.load([texts.examples(), path])
    [problem] = [p for p in caught.value.problems if p.file == str(path)]
    assert problem.field == field
    assert message in problem.message
    assert problem.line >= 4


def test_two_invariants_with_one_name_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("apiVersion: microseg.io/v1\nkind: Invariant\nmetadata: {name: only-bastion-ssh}\n"
                    "spec: {type: never, from: any}\n")  # fmt: skip
    with pytest.raises(errors.PolicyFileError, match="duplicate invariant name only-bastion-ssh"):
        policyfile.load([texts.examples(), path])

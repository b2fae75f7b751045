"""The lab's shipped policy allows exactly the default topology's flows (least privilege), checked with
the one evaluator over every host pair and every service, plus the guard rail and the users' entry.
Also: the inventory the lab applies is the topology's hosts, and it loads with the policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from microseg import errors, policyfile
from microseg.engine import engine
from microseg.lab import inventory, topology
from microseg.model import services, verdicts

TOP = topology.load(topology.default_path())


@pytest.fixture(scope="module")
def eng(tmp_path_factory: pytest.TempPathFactory) -> engine.PolicyEngine:
    inv = inventory.write(TOP, "enforce", tmp_path_factory.mktemp("lab") / "inventory.yaml")
    return engine.PolicyEngine(policyfile.load([topology.default_policy_dir(), inv]))


def verdict(eng: engine.PolicyEngine, src: str, dst: str, port: int) -> verdicts.Verdict:
    serving = TOP.host(dst).serves(port, "tcp")
    process = serving.process if serving else None
    return eng.evaluate(eng.endpoint(src), eng.endpoint(dst), port, services.Protocol("tcp"), process=process)


def test_allowed_between_hosts_is_exactly_the_topologys_flows(eng: engine.PolicyEngine) -> None:
    flows = {(f.source, f.target, f.port) for f in TOP.flows()}
    allowed = {
        (src.name, dst.name, svc.port)
        for src in TOP.hosts
        for dst in TOP.hosts
        if src is not dst
        for svc in dst.services
        if verdict(eng, src.name, dst.name, svc.port).decision is verdicts.Decision.ALLOW
    }
    assert allowed == flows


@pytest.mark.parametrize(
    ("src", "dst", "port", "rule"),
    [
        ("web-1", "db-1", 3306, None),  # web never reaches the database: default deny
        ("attacker", "db-1", 3306, None),
        ("attacker", "app-1", 8080, None),
        ("dev-web-1", "app-1", 8080, "security/dev-never-reaches-prod"),
        ("dev-web-1", "db-1", 22, "security/dev-never-reaches-prod"),
    ],
    ids=["web-to-db", "attacker-to-db", "attacker-to-app", "dev-to-prod-app", "dev-to-prod-ssh"],
)
def test_what_the_lab_must_block_is_denied(
    eng: engine.PolicyEngine, src: str, dst: str, port: int, rule: str | None
) -> None:
    found = verdict(eng, src, dst, port)
    assert found.decision is verdicts.Decision.DENY
    assert found.rule == rule


def test_the_db_rule_names_mysqld(eng: engine.PolicyEngine) -> None:
    app, db = eng.endpoint("app-1"), eng.endpoint("db-1")
    tcp = services.Protocol("tcp")
    assert eng.evaluate(app, db, 3306, tcp, process="mysqld").decision is verdicts.Decision.ALLOW
    assert eng.evaluate(app, db, 3306, tcp, process="nc").decision is verdicts.Decision.DENY


def test_users_reach_the_load_balancer_only(eng: engine.PolicyEngine) -> None:
    users = eng.endpoint(str(topology.GATEWAY))
    tcp = services.Protocol("tcp")
    assert (
        eng.evaluate(users, eng.endpoint("lb"), 80, tcp, process="nginx").decision is verdicts.Decision.ALLOW
    )
    assert (
        eng.evaluate(users, eng.endpoint("web-1"), 80, tcp, process="nginx").decision
        is verdicts.Decision.DENY
    )


def test_the_inventory_is_the_topologys_hosts(tmp_path: Path) -> None:
    docs = [
        d
        for d in inventory.documents(TOP, "alert", [topology.default_policy_dir()])
        if d["kind"] == "Workload"
    ]
    by_name = {d["metadata"]["name"]: d for d in docs}
    assert sorted(by_name) == sorted(h.name for h in TOP.hosts)
    db = by_name["db-1"]
    assert db["metadata"]["labels"] == {"env": "prod", "app": "crm", "role": "db"}
    assert db["spec"]["addresses"] == ["10.77.1.31"] and db["spec"]["mode"] == "alert"
    assert db["spec"]["attributes"]["hostname"] == "db-1"


def test_a_policy_that_does_not_fit_the_inventory_is_reported_by_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text(
        "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  tier: application\n"
        "  rules:\n    - {name: r, priority: 1, action: allow, from: any, to: any, services: [mysq]}\n"
    )
    with pytest.raises(
        errors.PolicyFileError, match=r"policy.yaml:7: spec.rules\[0\].services\[0\]: unknown service 'mysq'"
    ):
        inventory.documents(TOP, "enforce", [bad])

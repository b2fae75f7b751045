"""Attribute provenance reaches the engine: a label rule that does not trust the agent gives an
agent-reported hostname no labels, and a change of source alone moves the workload between
identities incrementally exactly as a fresh compile would place it."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from microseg.engine import engine
from microseg.model import addresses, estate, labelrules, labels, verdicts, workloads
from tests.engine.estates import TCP, crm_estate
from tests.engine.test_incremental import snapshot

DB_BY_HOSTNAME = labelrules.LabelRule("db-by-hostname", labels.Labels({"role": "db"}), hostname_glob="*-db-*")
SOURCES = [p.value for p in workloads.Provenance]
WEB_TO_DB = "application/web-to-db"


def impostor(source: str | None, name: str = "h1", host: int = 50) -> workloads.Workload:
    """A prod CRM workload without a role, reporting a database's hostname."""
    return workloads.Workload(
        name,
        addresses=(addresses.network(f"10.77.1.{host}"),),
        labels=labels.Labels({"env": "prod", "app": "crm"}),
        attributes={"hostname": f"{name}-db-1", "os": "linux"},
        attribute_sources={"hostname": source} if source else {},
    )


def with_rules(
    *extra: workloads.Workload, rules: tuple[labelrules.LabelRule, ...] = (DB_BY_HOSTNAME,)
) -> estate.Estate:
    base = crm_estate()
    return dataclasses.replace(base, workloads=(*base.workloads, *extra), label_rules=rules)


def mysql_verdict(eng: engine.PolicyEngine, target: str) -> verdicts.Verdict:
    return eng.evaluate(eng.endpoint("web-1"), eng.endpoint(target), 3306, TCP, process="mysqld")


def test_an_agent_reported_hostname_buys_no_role() -> None:
    eng = engine.PolicyEngine(with_rules(impostor("agent")))
    assert "role" not in eng.effective_labels("h1")
    assert mysql_verdict(eng, "h1").decision.value == "deny"
    assert mysql_verdict(eng, "db-1").rule == WEB_TO_DB  # the real database is untouched


def test_an_operator_hostname_and_an_opted_in_rule_still_label() -> None:
    trusting = dataclasses.replace(DB_BY_HOSTNAME, trust=frozenset(SOURCES))
    for eng in (
        engine.PolicyEngine(with_rules(impostor(None))),
        engine.PolicyEngine(with_rules(impostor("agent"), rules=(trusting,))),
    ):
        assert eng.effective_labels("h1")["role"] == "db"
        assert mysql_verdict(eng, "h1").rule == WEB_TO_DB


def test_a_change_of_source_alone_is_followed_incrementally() -> None:
    eng = engine.PolicyEngine(with_rules(impostor(None)))
    snapshot(eng)  # warm every cache: stale documents must not survive
    delta = eng.upsert_workload(impostor("agent"))
    assert "h1" in delta.workloads and "role" not in eng.effective_labels("h1")
    assert snapshot(eng) == snapshot(engine.PolicyEngine(with_rules(impostor("agent"))))
    eng.upsert_workload(impostor("enrollment"))
    assert eng.effective_labels("h1")["role"] == "db"
    assert snapshot(eng) == snapshot(engine.PolicyEngine(with_rules(impostor("enrollment"))))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["h1", "h2"]), st.sampled_from([None, *SOURCES])), max_size=8))
def test_source_flips_equal_a_fresh_compile(flips: list[tuple[str, str | None]]) -> None:
    hosts = {"h1": 50, "h2": 51}
    current = {n: impostor(None, n, h) for n, h in hosts.items()}
    eng = engine.PolicyEngine(with_rules(*current.values()))
    for name, source in flips:
        current[name] = impostor(source, name, hosts[name])
        eng.upsert_workload(current[name])
    assert snapshot(eng) == snapshot(engine.PolicyEngine(with_rules(*current.values())))

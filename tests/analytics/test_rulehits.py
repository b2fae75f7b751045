"""Rule hits count each connection once (both ends' reports merged), by the rule the agents
recorded, with the last hit; agent counters join per rule; enabled rules neither source saw are
listed as unused."""

from __future__ import annotations

from microseg.analytics import rulehits
from tests.analytics import BUCKET, example_engine, hour_of_traffic, row


def test_hits_count_connections_once_by_the_recorded_rule_and_list_unused_rules() -> None:
    engine = example_engine()
    rows = [
        row("prod-web-1", "out", "10.77.1.11", "10.77.1.21", 8443, rule="application/prod-web-to-app", connections=10),
        row("prod-app-1", "in", "10.77.1.11", "10.77.1.21", 8443, rule="application/prod-web-to-app", connections=10),
        row("prod-app-1", "in", "10.77.1.12", "10.77.1.21", 8443, rule="application/prod-web-to-app", connections=5,
            bucket=BUCKET + 3600),
        row("prod-db-1", "in", "10.77.1.11", "10.77.1.31", 3306, verdict="blocked", rule="default", connections=2),
    ]  # fmt: skip
    found = rulehits.rule_hits(rows, engine)
    hits = {h.rule: h for h in found.hits}
    web = hits["application/prod-web-to-app"]
    assert (web.connections, web.flows, web.verdicts) == (15, 2, ("allowed",))
    assert web.last_hit == max(r["lastSeen"] for r in rows[:3])
    assert (hits["default"].connections, hits["default"].verdicts) == (2, ("blocked",))
    assert [h.rule for h in found.hits] == [
        "application/prod-web-to-app",
        "default",
    ]  # most connections first
    enabled = {r.ref for r in engine.estate.rules if r.enabled}
    assert set(found.unused) == enabled - {"application/prod-web-to-app"}
    assert "application/prod-app-to-db" in found.unused


def test_a_rule_hit_by_any_flow_of_the_window_is_not_unused() -> None:
    engine = example_engine()
    found = rulehits.rule_hits(hour_of_traffic(), engine)
    used = {h.rule for h in found.hits}
    assert used and not used & set(found.unused)
    assert found.to_json()["rules"][0]["connections"] >= found.to_json()["rules"][-1]["connections"]


def test_counters_join_flows_per_rule_and_a_rule_only_counters_saw_is_used() -> None:
    engine = example_engine()
    rows = [row("prod-app-1", "in", "10.77.1.11", "10.77.1.21", 8443, rule="application/prod-web-to-app",
                connections=10)]  # fmt: skip
    flow_last = rows[0]["lastSeen"]
    counters = [
        {"rule": "application/prod-web-to-app", "packets": 12, "bytes": 720, "lastHit": flow_last + 30},
        {"rule": "application/prod-app-to-db", "packets": 3, "bytes": 180, "lastHit": flow_last - 30},
    ]
    found = rulehits.rule_hits(rows, engine, counters)
    hits = {h.rule: h for h in found.hits}
    web, db = hits["application/prod-web-to-app"], hits["application/prod-app-to-db"]
    assert (web.connections, web.counter_packets, web.counter_bytes) == (10, 12, 720)
    assert web.last_hit == flow_last + 30 and web.sources == ("counters", "flows")  # the later of the two
    assert (db.connections, db.flows, db.counter_packets, db.sources) == (0, 0, 3, ("counters",))
    assert db.last_hit == flow_last - 30
    assert "application/prod-app-to-db" not in found.unused
    assert found.to_json()["rules"][1] == {
        "rule": "application/prod-app-to-db", "connections": 0, "flows": 0, "lastHit": flow_last - 30,
        "verdicts": [], "counterPackets": 3, "counterBytes": 180, "sources": ["counters"]}  # fmt: skip
    assert "application/prod-app-to-db" in rulehits.rule_hits(rows, engine).unused  # flows alone: unused

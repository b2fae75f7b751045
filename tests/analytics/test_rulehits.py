"""Rule hits count each connection once (both ends' reports merged), by the rule the agents
recorded, with the last hit; enabled rules nothing hit are listed as unused."""

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

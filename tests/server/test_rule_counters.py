"""Rule counters in agent status reports, through the real API on both backends: they show up in
`GET /flows/rule-hits` next to the flow counts, a rule only counters saw is not unused, a report
sent twice counts once, a new epoch counts from zero, old agents' reports without counters stay
valid, and malformed counters are refused as problem+json."""

from __future__ import annotations

import time
from typing import Any

import pytest

from microseg.store import summaries
from tests.server.conftest import Api, ok, problem
from tests.server.estates import provision_example
from tests.server.test_flow_summary import enroll, flow, send

AT = summaries.bucket_of(time.time()) - 3600
APP, WEB, DB = "10.77.1.21", "10.77.1.11", "10.77.1.31"
WEB_TO_APP = "application/prod-web-to-app"
APP_TO_DB = "application/prod-app-to-db"


@pytest.fixture
def estate(api: Api) -> Api:
    """The example estate provisioned; prod-db-1's agent reported one flow app -> db."""
    provision_example(api)
    db = enroll(api, "prod-db-1", DB, {})
    assert send(db, "b-1", flow(APP, DB, 3306, AT, process="mysqld", rule=APP_TO_DB))
    return api


def status(epoch: str, **rules: tuple[int, int]) -> dict[str, Any]:
    counted = [{"rule": r.replace("__", "/").replace("_", "-"), "packets": p, "bytes": b}
               for r, (p, b) in rules.items()]  # fmt: skip
    return {"appliedHash": None, "dataplane": "nftables", "counters": {"epoch": epoch, "rules": counted}}


def hits(api: Api) -> tuple[dict[str, dict[str, Any]], list[str]]:
    found = ok(api.get("/flows/rule-hits", since="7d"))
    return {h["rule"]: h for h in found["rules"]}, found["unused"]


def test_counters_show_up_in_rule_hits_and_a_rule_only_they_saw_is_used(estate: Api) -> None:
    before, unused = hits(estate)
    assert WEB_TO_APP in unused and WEB_TO_APP not in before
    web = enroll(estate, "prod-web-1", WEB, {})
    app = enroll(estate, "prod-app-1", APP, {})
    sent = time.time()
    ok(web.post("/agent/status", status("w1", application__prod_web_to_app=(7, 420))))
    both = status("a1", application__prod_web_to_app=(5, 300), application__prod_app_to_db=(2, 120))
    ok(app.post("/agent/status", both))
    found, unused = hits(estate)
    assert WEB_TO_APP not in unused and APP_TO_DB not in unused
    to_app = found[WEB_TO_APP]
    assert (to_app["connections"], to_app["flows"]) == (0, 0)
    assert (to_app["counterPackets"], to_app["counterBytes"]) == (12, 720)  # summed over agents
    assert to_app["sources"] == ["counters"] and to_app["lastHit"] >= sent - 1
    to_db = found[APP_TO_DB]
    assert (to_db["connections"], to_db["counterPackets"], to_db["sources"]) == (1, 2, ["counters", "flows"])
    assert to_db["lastHit"] >= sent - 1  # the counter saw it later than the flow's last_seen


def test_a_resent_report_counts_once_and_a_new_epoch_counts_from_zero(estate: Api) -> None:
    web = enroll(estate, "prod-web-1", WEB, {})
    for _ in range(2):  # the answer got lost, say: the agent sends the same totals again
        ok(web.post("/agent/status", status("w1", application__prod_web_to_app=(7, 420))))
    assert hits(estate)[0][WEB_TO_APP]["counterPackets"] == 7
    ok(web.post("/agent/status", status("w1", application__prod_web_to_app=(9, 540))))
    assert hits(estate)[0][WEB_TO_APP]["counterPackets"] == 9
    ok(web.post("/agent/status", status("w2", application__prod_web_to_app=(1, 60))))  # agent restarted
    assert hits(estate)[0][WEB_TO_APP]["counterPackets"] == 10


def test_reports_without_counters_stay_valid_and_bad_counters_are_refused(estate: Api) -> None:
    web = enroll(estate, "prod-web-1", WEB, {})
    ok(web.post("/agent/status", {"appliedHash": None, "dataplane": "nftables", "errors": []}))
    negative = status("w1", default=(-1, 0))
    problem(web.post("/agent/status", negative), 422)
    twice = status("w1", default=(1, 60))
    twice["counters"]["rules"] *= 2
    problem(web.post("/agent/status", twice), 422)
    problem(web.post("/agent/status", {"counters": {"rules": []}}), 422)  # no epoch
    problem(estate.as_("viewer").post("/agent/status", status("w1", default=(1, 60))), 403)
    assert "default" not in hits(estate)[0] or hits(estate)[0]["default"]["counterPackets"] == 0

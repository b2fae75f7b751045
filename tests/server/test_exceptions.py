"""Exceptions need four eyes: a request allows nothing, its own requester cannot approve it,
another editor's approval makes it a rule at the next provision, any later change drops the
approval, and at expiry it is gone without anyone acting (the engine's and nftables' notAfter)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.server.conftest import Api, ok, problem
from tests.server.estates import doc, provision_example

SOON = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
SPEC = {"owner": "dba", "reason": "data migration", "ticket": "CHG-7", "expires": SOON,
        "from": [{"selector": "env=dev,role=web"}], "to": [{"selector": "env=prod,role=db"}],
        "services": ["mysql"]}  # fmt: skip


@pytest.fixture
def estate(api: Api) -> Api:
    provision_example(api)
    return api


def rule_of(api: Api) -> Any:
    verdict = ok(api.post("/explain", {"from": "dev-web-1", "to": "prod-db-1", "port": "3306/tcp"}))[
        "verdict"
    ]
    return verdict["rule"]


def test_a_request_allows_nothing_until_another_user_approves_it(estate: Api) -> None:
    ok(estate.post("/exceptions", doc("Exception", "migration", SPEC)), 201)
    ok(estate.post("/versions", {"note": "the request"}), 201)
    assert rule_of(estate) == "security/dev-never-reaches-prod"
    body = problem(estate.post("/exceptions/migration/approve"), 403)
    assert "another user must approve it" in body["detail"]
    problem(estate.as_("viewer").post("/exceptions/migration/approve"), 403)
    approved = ok(estate.as_("editor").post("/exceptions/migration/approve"))
    assert approved["spec"]["approver"].startswith("token:test-editor(") and approved["spec"][
        "approvedAt"
    ].endswith("Z")
    problem(estate.as_("admin").post("/exceptions/migration/approve"), 409)
    ok(estate.as_("editor").post("/versions", {"note": "approved"}), 201)
    assert rule_of(estate) == "exception/migration"
    [entry] = [
        e
        for e in ok(estate.get("/audit", target="Exception/"))["items"]
        if e["action"] == "approve-exception"
    ]
    assert entry["details"]["requestedBy"].startswith("token:test-admin(")
    problem(estate.post("/exceptions/nope/approve"), 404)


def test_changing_an_approved_exception_drops_the_approval(estate: Api) -> None:
    ok(estate.post("/exceptions", doc("Exception", "migration", SPEC)), 201)
    approved = ok(estate.as_("editor").post("/exceptions/migration/approve"))
    # the same document again (as an export re-applied): unchanged, still approved
    result = ok(
        estate.post(
            "/apply", {"documents": [{k: approved[k] for k in ("apiVersion", "kind", "metadata", "spec")}]}
        )
    )
    assert result["unchanged"] == ["Exception/migration"]
    wider = doc("Exception", "migration", {**approved["spec"], "services": "any"})
    stored = ok(estate.put("/exceptions/migration", wider))
    assert "approver" not in stored["spec"] and "approvedAt" not in stored["spec"]
    ok(estate.post("/versions", {"note": "widened"}), 201)
    assert rule_of(estate) == "security/dev-never-reaches-prod"

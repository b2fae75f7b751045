"""Everything is authenticated, and every role sees only what it may: each 401 and 403 path."""

from __future__ import annotations

from tests.server.conftest import Api, ok, problem
from tests.server.estates import doc, workload

READS = ["/workloads", "/rules", "/services", "/versions", "/audit", "/events", "/flows", "/draft", "/agents",
         "/labels", "/draft/diff"]  # fmt: skip


def test_only_health_and_the_openapi_document_are_open(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    assert api.client.get("/openapi.json").json()["info"]["title"] == "microseg control plane"
    problem(api.client.get("/metrics"), 401)


def test_no_token_is_401_with_a_bearer_challenge(api: Api) -> None:
    for path in READS:
        response = api.as_("none").get(path)
        problem(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"


def test_unknown_tokens_are_401(api: Api) -> None:
    for token in ["msk_nope_nope", "msa_nope_nope", "garbage", api.tokens["admin"] + "x"]:
        problem(api.as_(token).get("/workloads"), 401)


def test_a_wrong_scheme_is_401(api: Api) -> None:
    response = api.client.get("/api/v1/workloads", headers={"Authorization": f"Basic {api.tokens['admin']}"})
    problem(response, 401)


def test_viewers_read_everything_but_tokens(api: Api) -> None:
    for path in READS:
        ok(api.as_("viewer").get(path))


def test_viewers_change_nothing(api: Api) -> None:
    viewer = api.as_("viewer")
    w = workload("w1", "10.0.0.1", {"env": "prod"})
    problem(viewer.post("/workloads", w), 403)
    problem(viewer.put("/workloads/w1", w), 403)
    problem(viewer.post("/apply", {"documents": [w]}), 403)
    problem(viewer.post("/versions", {"note": "x"}), 403)
    problem(viewer.post("/workloads/w1/quarantine"), 403)
    ok(api.post("/workloads", w), 201)
    problem(viewer.delete("/workloads/w1"), 403)
    assert ok(viewer.get("/workloads"))["items"][0]["metadata"]["name"] == "w1"


def test_editors_edit_but_do_not_manage_tokens(api: Api) -> None:
    editor = api.as_("editor")
    ok(editor.post("/services", doc("Service", "web", {"ports": [{"port": 443}]})), 201)
    problem(editor.get("/tokens"), 403)
    problem(editor.post("/tokens", {"name": "x", "role": "admin"}), 403)
    problem(editor.post("/enrollment-tokens", {"name": "x"}), 403)
    problem(api.as_("viewer").get("/tokens"), 403)


def test_admin_creates_and_revokes_tokens_stored_hashed(api: Api) -> None:
    made = ok(api.post("/tokens", {"name": "ci", "role": "viewer"}), 201)
    token = made["token"]
    assert token.startswith("msk_") and made["role"] == "viewer"
    ok(api.as_(token).get("/workloads"))
    listed = ok(api.get("/tokens"))["items"]
    assert all("token" not in t and "secret_hash" not in t for t in listed)
    with api.db.read() as conn:
        from sqlalchemy import text

        hashes = [r[0] for r in conn.execute(text("SELECT secret_hash FROM api_tokens"))]
    assert token not in hashes and all(len(h) == 64 for h in hashes)
    ok(api.delete(f"/tokens/{made['id']}"), 204)
    problem(api.as_(token).get("/workloads"), 401)
    problem(api.delete(f"/tokens/{made['id']}"), 404)


def test_agent_credentials_cannot_use_the_management_api(api: Api) -> None:
    enrolled = _enroll(api)
    agent = api.as_(enrolled["credential"])
    problem(agent.get("/workloads"), 403)
    problem(agent.post("/versions", {"note": "x"}), 403)
    problem(api.client.get("/metrics", headers=agent.headers()), 403)


def test_api_tokens_cannot_use_the_agent_endpoints(api: Api) -> None:
    for who in ("admin", "viewer"):
        problem(api.as_(who).get("/agent/ruleset"), 403)
        problem(api.as_(who).post("/agent/status", {}), 403)


def _enroll(api: Api, hostname: str = "agent-1", address: str = "10.9.0.1") -> dict[str, str]:
    token = ok(api.post("/enrollment-tokens", {"name": "t"}), 201)["token"]
    body = {"token": token, "inventory": {"hostname": hostname, "addresses": [address]}}
    result: dict[str, str] = ok(api.as_("none").post("/agent/enroll", body), 201)
    return result

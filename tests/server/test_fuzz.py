"""A property-based fuzz of the published OpenAPI: whatever a client sends, the answer is never
a 5xx. Requests are generated from the OpenAPI document itself (operations, path and query
parameters, request bodies), mixing schema-shaped values with garbage, against a real server
holding the example estate, a provisioned version and an enrolled agent."""

from __future__ import annotations

import string
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microseg.server import app as server_app
from microseg.store import database, tokens
from tests.server import running
from tests.server.conftest import make_settings
from tests.server.estates import example

WORDS = ["ports", "port", "endPort", "protocol", "cidrs", "except", "addresses", "selector", "from", "to",
         "services", "priority", "action", "tier", "mode", "match", "labels", "expires", "owner", "reason",
         "kind", "ipList", "cidr", "any", "matchLabels", "matchExpressions", "operator", "values", "order",
         "controlPlane", "quarantineAllow", "notAfter", "notBefore", "hostname", "enabled", "policy"]  # fmt: skip
VALUES = ["tcp", "udp", "icmp", "any", "allow", "deny", "pass", "enforce", "alert", "env=prod", "role in (web,db)",
          "10.0.0.1", "10.0.0.0/8", "::1", "2026-01-01T00:00:00Z", "mysql", "security", "application", "", "x" * 300,
          "prod-db-1", "../../etc", "%00", "\u0000", "☃"]  # fmt: skip
NAMES = ["prod-db-1", "prod-web-1", "mysql", "security/dev-never-reaches-prod", "1", "2", "forensics", "settings",
         "nope", "a" * 300, "x y", "..", "%2F"]  # fmt: skip

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63), st.floats(allow_nan=False, allow_infinity=False),
                    st.sampled_from(VALUES), st.text(max_size=20))  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.sampled_from(WORDS), st.text(max_size=8)), inner, max_size=5)),
    max_leaves=20,
)  # fmt: skip


def from_schema(schema: dict[str, Any], defs: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values shaped like `schema` (often valid, sometimes not), or plain garbage."""
    if depth > 6:
        return json_values
    if "$ref" in schema:
        return from_schema(defs[schema["$ref"].rsplit("/", 1)[1]], defs, depth + 1)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return st.one_of([from_schema(s, defs, depth + 1) for s in schema[key]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        return _object(schema, defs, depth)
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), defs, depth + 1), max_size=4)
    if kind == "string":
        return st.one_of(st.sampled_from(VALUES), st.text(max_size=30))
    if kind == "integer":
        return st.one_of(st.integers(-5, 70_000), st.integers())
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    return json_values


def _object(schema: dict[str, Any], defs: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
    props = schema.get("properties", {})
    if not props:
        return st.dictionaries(
            st.one_of(st.sampled_from(WORDS), st.text(max_size=8)), json_values, max_size=6
        )
    required = {
        k: from_schema(v, defs, depth + 1) for k, v in props.items() if k in schema.get("required", [])
    }
    optional = {k: from_schema(v, defs, depth + 1) for k, v in props.items() if k not in required}
    return st.fixed_dictionaries(required, optional=optional)


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path template, operation) for every published operation."""
    return [(method.upper(), path, op) for path, item in spec["paths"].items() for method, op in item.items()]


def request_for(spec: dict[str, Any], method: str, path: str, op: dict[str, Any]) -> st.SearchStrategy[Any]:
    """(method, path, query, body) for one operation."""
    defs = spec.get("components", {}).get("schemas", {})
    path_params, query = {}, {}
    for param in op.get("parameters", []):
        values = st.one_of(st.sampled_from(NAMES), from_schema(param.get("schema", {}), defs).map(str),
                           st.text(string.printable, min_size=1, max_size=12))  # fmt: skip
        if param["in"] == "path":
            path_params[param["name"]] = values
        elif param["in"] == "query":
            query[param["name"]] = values
    body_schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    body = st.one_of(from_schema(body_schema, defs), json_values) if body_schema else st.none()
    return st.tuples(st.just(method), st.just(path), st.fixed_dictionaries(path_params),
                     st.fixed_dictionaries({}, optional=query), body)  # fmt: skip


PATHS = {
    "Workload": "workloads",
    "Service": "services",
    "IPList": "iplists",
    "LabelRule": "labelrules",
    "Tier": "tiers",
    "Settings": "settings",
}


Request = tuple[str, str, dict[str, Any], dict[str, Any], Any]
"""(method, path template, path parameters, query, JSON body)."""


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, str, dict[str, Any], dict[str, Any], Any]:
    """A real example document with one field of its spec (or its labels) replaced by garbage, sent
    to its own URL or applied: the deep paths of validation, not just the schema's."""
    docs = [d for d in example() if d["kind"] in PATHS or d["kind"] == "Policy"]
    doc = draw(st.sampled_from(docs))
    spec = dict(doc.get("spec") or {})
    key = draw(st.sampled_from([*spec, *WORDS]))
    spec[key] = draw(json_values)
    if doc["kind"] == "Policy" and spec.get("rules") and draw(st.booleans()):
        rules = [dict(r) for r in doc["spec"]["rules"]]
        rules[0][draw(st.sampled_from([*rules[0], *WORDS]))] = draw(json_values)
        spec = {**doc["spec"], "rules": rules}
    changed = {**doc, "spec": spec}
    if doc["kind"] == "Policy" or draw(st.booleans()):
        return "POST", "/api/v1/apply", {}, {}, {"documents": [changed]}
    return "PUT", f"/api/v1/{PATHS[doc['kind']]}/{{name}}", {"name": doc["metadata"]["name"]}, {}, changed


@pytest.fixture
def target(tmp_path: Path) -> Iterator[tuple[httpx.Client, dict[str, str], dict[str, Any]]]:
    url = database.sqlite_url(tmp_path / "data")
    db = database.Database(url)
    app = server_app.create_app(make_settings(url, enroll_per_minute=100_000), db)
    with running.serve(app) as base, httpx.Client(base_url=base, timeout=30) as http:
        with db.write() as conn:
            admin = tokens.create_api(conn, "fuzz", "admin", "test")[1]
        auth = {"Authorization": f"Bearer {admin}"}
        assert http.post("/api/v1/apply", json={"documents": example()}, headers=auth).status_code == 200
        assert http.post("/api/v1/versions", json={"note": "fuzz"}, headers=auth).status_code == 201
        enroll = http.post(
            "/api/v1/enrollment-tokens", json={"name": "f", "reusable": True}, headers=auth
        ).json()
        body = {"token": enroll["token"], "inventory": {"hostname": "fuzz-agent", "addresses": ["10.99.0.1"]}}
        agent = http.post("/api/v1/agent/enroll", json=body).json()["credential"]
        spec = http.get("/openapi.json").json()
        yield http, {"admin": admin, "agent": agent, "enroll": enroll["token"]}, spec
    db.dispose()


@pytest.mark.slow
def test_no_request_gets_a_5xx(target: tuple[httpx.Client, dict[str, str], dict[str, Any]]) -> None:
    http, secrets, spec = target
    ops = operations(spec)
    assert len(ops) > 40
    strategy = st.one_of([request_for(spec, *op) for op in ops])

    def send(request: Request, who: str) -> None:
        method, template, path_params, query, body = request
        path = template.format(**{k: urllib.parse.quote(str(v), safe="") for k, v in path_params.items()})
        if body is not None and template == "/api/v1/agent/enroll" and isinstance(body, dict):
            body.setdefault("token", secrets["enroll"])
        headers = {"Authorization": f"Bearer {secrets[who]}"}
        answer = http.request(method, path, params={k: str(v) for k, v in query.items()},
                              json=body, headers=headers, timeout=30)  # fmt: skip
        assert answer.status_code < 500, (method, path, query, body, answer.text)
        if answer.status_code >= 400:
            assert answer.headers["content-type"].startswith("application/problem+json"), answer.text

    @settings(max_examples=600, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(strategy, st.sampled_from(["admin", "agent"]))
    def check(request: Request, who: str) -> None:
        send(request, who)

    check()

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(mutated())
    def check_documents(request: Request) -> None:
        send(request, "admin")

    check_documents()

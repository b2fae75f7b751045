"""Inputs that once broke the control plane for everyone: any Unicode text in any text field, a
quarantine in progress, integers past the database's columns, lone surrogates, deep JSON and
streamed bodies past the size limit. Each answer is a 2xx or a 4xx problem naming what is wrong,
never a 5xx or a dropped connection, and a provision still works afterwards."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microseg.server import inputguard
from tests.server.conftest import Api, ok, problem
from tests.server.estates import doc, provision_example

SOON = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
EXCEPTION = {"owner": "dba", "reason": "data migration", "ticket": "CHG-7", "expires": SOON,
             "from": [{"selector": "env=dev,role=web"}], "to": [{"selector": "env=prod,role=db"}],
             "services": ["mysql"]}  # fmt: skip
SPECIAL = ["oncall 🚀", "🚀", "\U0001f4a9\U00010348", "': - # & * ! | > ' \" % @ `", "- x", "&a *a", "!!python/object",
           "%TAG", "| \n  >", "\\u0000", "\u2028\u2029", "\ufeff", "null", "~", "yes", "1e3", "0x1F", "a\nb",
           "\t", "{}", "[]", "---", "...", "ü" * 300, "\u202e"]  # fmt: skip
texts = st.one_of(st.sampled_from(SPECIAL), st.text(min_size=1, max_size=40))


@pytest.fixture
def estate(api: Api) -> Api:
    provision_example(api)
    return api


def fields_of(body: dict[str, Any]) -> list[str]:
    """Every field a problem names (object problems, request-validation errors, a UserError)."""
    found = [p.get("field", "") for p in body.get("problems", []) + body.get("errors", [])]
    return [f for f in [*found, body.get("field", "")] if f]


def still_provisions(api: Api, seq: int) -> None:
    """A small real change provisions: the draft is not broken by what came before."""
    cidrs = [f"10.201.{seq % 250}.0/24"]
    assert api.put("/iplists/probe", doc("IPList", "probe", {"cidrs": cidrs})).is_success
    ok(api.post("/versions", {"note": f"probe {seq}"}), 201)


def ok_or_names(response: httpx.Response, *field: str) -> bool:
    """True when the change was taken; otherwise it must be a 4xx problem naming a `field`."""
    if response.status_code < 300:
        return True
    body = problem(response, response.status_code)
    assert 400 <= response.status_code < 500, body
    assert any(f in found for f in field for found in fields_of(body)), (field, body)
    return False


Case = Callable[[Api, str, int], None]


def tier_description(api: Api, text: str, seq: int) -> None:
    sent = doc("Tier", f"t{seq}", {"order": 1000 + seq, "description": text})
    if ok_or_names(api.put(f"/tiers/t{seq}", sent), "description"):
        assert ok(api.get(f"/tiers/t{seq}"))["spec"]["description"] == text


def rule_owner_and_reason(api: Api, text: str, seq: int) -> None:
    spec = {"tier": "application", "priority": 5000 + seq, "action": "allow", "from": [{"selector": "app=web"}],
            "to": [{"selector": "app=db"}], "services": ["mysql"], "owner": text, "reason": text}  # fmt: skip
    if ok_or_names(api.put(f"/rules/application/r{seq}", doc("Rule", f"r{seq}", spec)), "spec."):
        assert ok(api.get(f"/rules/application/r{seq}"))["spec"]["reason"] == text


def exception_owner_and_ticket(api: Api, text: str, seq: int) -> None:
    spec = {**EXCEPTION, "owner": text, "ticket": text, "reason": text}
    if ok_or_names(api.post("/exceptions", doc("Exception", f"e{seq}", spec)), "spec."):
        ok(api.as_("editor").post(f"/exceptions/e{seq}/approve"))
        assert ok(api.get(f"/exceptions/e{seq}"))["spec"]["ticket"] == text


def object_name(api: Api, text: str, seq: int) -> None:
    sent = doc("Service", text, {"ports": [{"port": 1000 + seq}]})
    if ok_or_names(api.post("/services", sent), "name"):
        assert ok(api.get("/services/" + urllib.parse.quote(text, safe="")))["metadata"]["name"] == text


def label_value(api: Api, text: str, seq: int) -> None:
    if ok_or_names(api.post("/labels/bulk", {"workloads": ["dev-web-1"], "add": {"team": text}}), "team"):
        assert ok(api.get("/workloads/dev-web-1"))["metadata"]["labels"]["team"] == text


def token_name(api: Api, text: str, seq: int) -> None:
    made = api.post("/tokens", {"name": text, "role": "editor"})
    if ok_or_names(made, "name"):
        assert made.json()["name"] == text
        spec = {**EXCEPTION, "owner": f"o{seq}"}
        ok(api.as_("editor").post("/exceptions", doc("Exception", f"x{seq}", spec)), 201)
        # the approver's name is the text, and it goes into the exception's rule
        ok(api.as_(made.json()["token"]).post(f"/exceptions/x{seq}/approve"))


def enrollment_token(api: Api, text: str, seq: int) -> None:
    made = api.post("/enrollment-tokens", {"name": text, "labels": {"team": text}})
    if ok_or_names(made, "name", "labels.team"):
        assert made.json()["name"] == text


def quarantine_reason(api: Api, text: str, seq: int) -> None:
    if ok_or_names(api.post("/workloads/dev-db-1/quarantine", {"level": "full", "reason": text}), "reason"):
        ok(api.post("/workloads/dev-db-1/release", {"reason": text}))
        log = ok(api.get("/audit", target="Workload/dev-db-1"))["items"]
        assert any(e["details"].get("reason") == text for e in log)


def provision_note(api: Api, text: str, seq: int) -> None:
    cidrs = [f"10.202.{seq % 250}.0/24"]
    assert api.put("/iplists/noted", doc("IPList", "noted", {"cidrs": cidrs})).is_success
    made = api.post("/versions", {"note": text})
    if ok_or_names(made, "note"):
        assert ok(api.get(f"/versions/{made.json()['number']}"))["note"] == text


CASES: list[Case] = [tier_description, rule_owner_and_reason, exception_owner_and_ticket, object_name, label_value,
                     token_name, enrollment_token, quarantine_reason, provision_note]  # fmt: skip


def test_an_emoji_token_approving_an_exception_leaves_drafts_and_provisions_working(estate: Api) -> None:
    made = ok(estate.post("/tokens", {"name": "oncall 🚀", "role": "editor"}), 201)
    ok(estate.as_("editor").post("/exceptions", doc("Exception", "migration", EXCEPTION)), 201)
    approved = ok(estate.as_(made["token"]).post("/exceptions/migration/approve"))
    assert "oncall 🚀" in approved["spec"]["approver"]
    tier = doc("Tier", "incident", {"order": 900, "description": "on call 🚀 «»"})
    ok(estate.put("/tiers/incident", tier), 201)
    ok(estate.post("/versions", {"note": "fix during the incident 🚑"}), 201)
    flow = {"from": "dev-web-1", "to": "prod-db-1", "port": "3306/tcp"}
    assert ok(estate.post("/explain", flow))["verdict"]["rule"] == "exception/migration"


def test_any_unicode_text_in_any_text_field_round_trips_or_is_refused_by_name(estate: Api) -> None:
    seq = count(1)

    @settings(max_examples=45, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(st.sampled_from(CASES), texts)
    def check(case: Case, text: str) -> None:
        n = next(seq)
        case(estate, text, n)
        still_provisions(estate, n)

    check()
    for case in CASES:  # every field sees the characters that broke it, whatever hypothesis drew
        for text in ("oncall 🚀 ': # & * ! | > \" % @ `", "nul \x00 inside"):
            n = next(seq)
            case(estate, text, n)
            still_provisions(estate, n)


ONLY_SSH = doc("Invariant", "only-bastion-ssh", {"type": "only", "from": [{"selector": "role=bastion"}], "to": "any",
                                                 "services": [{"port": 22}]})  # fmt: skip


def test_a_forensics_quarantine_does_not_refuse_provisions_and_is_reported(estate: Api) -> None:
    assert any(d["metadata"]["name"] == "only-bastion-ssh" for d in ok(estate.get("/invariants"))["items"])
    ok(estate.post("/workloads/prod-db-1/quarantine", {"level": "forensics", "reason": "EDR alert"}))
    ok(estate.put("/tiers/incident", doc("Tier", "incident", {"order": 900, "description": "fix"})), 201)
    # refused with 409 before (only force went through), because of the built-in forensics rules
    made = ok(estate.post("/versions", {"note": "a fix during the incident"}), 201)
    [exempt, *_] = made["quarantineExempt"]
    assert exempt["invariant"] == "only-bastion-ssh" and exempt["quarantine"] is True
    assert exempt["rule"].startswith("quarantine/allow-forensics-")
    log = ok(estate.get("/audit"))["items"]
    assert not [e for e in log if e["action"] == "override-invariants"]
    [prov] = [e for e in log if e["action"] == "provision" and e["target"] == f"version/{made['number']}"]
    assert all(v["quarantine"] for v in prov["details"]["invariantsBroken"])
    assert ok(estate.get("/draft/diff"))["invariants"]["violations"][0]["quarantine"] is True


def test_a_rule_in_the_quarantine_tier_still_refuses(estate: Api) -> None:
    spec = {"tier": "quarantine", "priority": 7, "action": "allow", "from": [{"selector": "env=dev"}],
            "to": [{"selector": "role=db"}], "services": [{"port": 22}]}  # fmt: skip
    ok(estate.put("/rules/quarantine/allow-forensics-in", doc("Rule", "allow-forensics-in", spec)), 201)
    body = problem(estate.post("/versions", {"note": "sneaky"}), 409)
    assert body["violations"] and not any(v["quarantine"] for v in body["violations"])


BIG = [2**31, 2**63, 10**30]


@pytest.mark.parametrize("number", BIG, ids=["2^31", "2^63", "10^30"])
def test_integers_past_the_columns_are_a_4xx(estate: Api, number: int) -> None:
    cursor = max(number, 2**63)  # cursors are 64-bit ids, version numbers 32-bit
    for response in (
        estate.get(f"/versions/{number}"),
        estate.post(f"/versions/{number}/rollback", {"note": "x"}),
        estate.get("/diff", from_=str(number), to="draft"),
        estate.get("/versions", before=number),
        estate.get("/audit", after=cursor),
        estate.get("/events", after=cursor),
        estate.get("/flows/summary", continue_=cursor),
    ):
        problem(response, 422)
    still_provisions(estate, 3)


def agent_credential(api: Api, hostname: str = "probe-1") -> str:
    enroll = ok(api.post("/enrollment-tokens", {"name": "lab", "reusable": True}), 201)
    body = {"token": enroll["token"], "inventory": {"hostname": hostname, "addresses": ["10.99.0.1"]}}
    found: str = ok(api.post("/agent/enroll", body), 201)["credential"]
    return found


def raw_post(api: Api, path: str, text: str, token: str | None = None) -> httpx.Response:
    headers = {**api.headers(), "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return api.client.post("/api/v1" + path, content=text.encode(), headers=headers)


def test_lone_surrogates_are_refused_naming_the_field(estate: Api) -> None:
    agent = agent_credential(estate)
    status = '{"appliedHash": "abc", "dataplane": "nftables", "errors": ["boom \\ud800"]}'
    body = problem(raw_post(estate, "/agent/status", status, agent), 422)
    assert fields_of(body) == ["body.errors[0]"]
    bulk = '{"workloads": ["dev-web-1"], "add": {"team": "a"}, "remove": ["x\\udc00y"]}'
    assert fields_of(problem(raw_post(estate, "/labels/bulk", bulk), 422)) == ["body.remove[0]"]
    tier = '{"apiVersion": "microseg.io/v1", "kind": "Tier", "metadata": {"name": "t"}, "spec": {"\\ud83d": 1}}'  # fmt: skip
    assert fields_of(problem(raw_post(estate, "/tiers", tier), 422)) == ["body.spec"]
    # a pair is one astral character, and an escaped backslash is just text
    paired = '{"apiVersion": "microseg.io/v1", "kind": "Tier", "metadata": {"name": "t"}, "spec": {"order": 901, ' \
             '"description": "\\ud83d\\ude80 \\\\ud800"}}'  # fmt: skip
    assert ok(raw_post(estate, "/tiers", paired), 201)["spec"]["description"] == "🚀 \\ud800"
    still_provisions(estate, 1)


def test_nul_characters_are_refused_in_bodies_paths_and_queries(estate: Api) -> None:
    tier = '{"apiVersion": "microseg.io/v1", "kind": "Tier", "metadata": {"name": "t"}, "spec": {"order": 902, ' \
           '"description": "a\\u0000b"}}'  # fmt: skip
    assert fields_of(problem(raw_post(estate, "/tiers", tier), 422)) == ["body.spec.description"]
    assert fields_of(problem(estate.get("/labelrules/x%00y"), 422)) == ["path"]
    assert fields_of(problem(estate.delete("/invariants/x", tier="a\x00"), 422)) == ["query"]
    assert fields_of(problem(estate.get("/events", kind="\x00"), 422)) == ["query"]
    still_provisions(estate, 2)


@pytest.mark.parametrize(
    ("text", "deep"),
    [
        ("[" * 65 + "]" * 65, True),
        ("[" * 64 + "]" * 64, False),
        ("[" + "[" * 10 + "]" * 10 + ", " + "[" * 60 + "]" * 60 + "]", False),  # many brackets, none deep
        ('["' + "[" * 100 + '"]', False),  # brackets inside a string are text
        ('["\\\\", ' + "[" * 70 + "]" * 70 + "]", True),  # an escaped backslash ends no string early
        ('["\\"' + "[" * 70 + '"]', False),  # an escaped quote ends no string
    ],
    ids=["65", "64", "wide", "in-string", "escaped-backslash", "escaped-quote"],
)
def test_depth_is_counted_outside_strings(text: str, deep: bool) -> None:
    json.loads(text)  # each is valid JSON
    assert inputguard.too_deep(text.encode()) is deep


@pytest.mark.parametrize("depth", [65, 600, 950, 5000])
def test_deep_json_is_refused_before_any_recursion(estate: Api, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    agent = agent_credential(estate, f"deep-{depth}")
    for path, token, text in (
        ("/apply", None, '{"documents": ' + nested + "}"),
        ("/tiers", None, '{"apiVersion": "microseg.io/v1", "kind": "Tier", "spec": {"x": ' + nested + "}}"),
        ("/agent/flows", agent, '{"batch_id": "b", "records": ' + nested + "}"),
        ("/agent/status", agent, '{"appliedHash": "abc", "errors": ' + nested + "}"),
    ):
        body = problem(raw_post(estate, path, text, token), 400)
        assert "nested deeper than 64" in body["detail"]
    shallow = "[" * 60 + "]" * 60  # deep enough to look odd, not enough to refuse
    problem(raw_post(estate, "/apply", '{"documents": ' + shallow + "}"), 422)


def chunked(size: int) -> Iterator[bytes]:
    piece = b'{"documents": [' + b" " * (1 << 16)
    sent = 0
    while sent < size:
        yield piece
        sent += len(piece)
        piece = b" " * (1 << 16)
    yield b"]}"


@pytest.mark.parametrize("path", ["/apply", "/agent/flows", "/tiers"])
def test_a_chunked_body_past_the_limit_is_a_413(estate: Api, path: str) -> None:
    token = agent_credential(estate) if path.startswith("/agent/") else estate.tokens["admin"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    answer = estate.client.post("/api/v1" + path, content=chunked(10 << 20), headers=headers)
    assert "content-length" not in {k.lower() for k in answer.request.headers}
    body = problem(answer, 413)
    assert "limited to" in body["detail"]
    still_provisions(estate, 1)

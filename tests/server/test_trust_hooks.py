"""Signed webhooks at the trust boundary (issue 15): a captured call cannot be replayed after a
restart or on another replica, the timestamp is whole seconds in digits and nothing else, the
signature needs its `sha256=` prefix, a signed body may not say a key twice, and each hook may only
do what its scope allows (no scope: quarantine only; release only of hooks' quarantines unless
`release-any`)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from microseg import errors
from microseg.server import config
from microseg.store import replays, schema
from tests.server import processes
from tests.server.conftest import Api, make_settings, ok, problem
from tests.server.estates import provision_example

EDR, SIEM, SOAR = "edr-s3cret", "siem-s3cret", "soar-s3cret"
HOOKS = (f"edr:quarantine+release={EDR}", f"siem={SIEM}", f"soar:release-any={SOAR}")
AS_EDR: dict[str, Any] = {"name": "edr", "secret": EDR}
Replica = Callable[[], contextlib.AbstractContextManager[str]]


@pytest.fixture
def settings(database_url: str) -> config.ServerSettings:
    return make_settings(database_url, hook_secrets=HOOKS)


@pytest.fixture
def estate(api: Api) -> Api:
    provision_example(api)
    return api


def signed(raw: bytes, *, secret: str = SIEM, name: str = "siem", stamp: str | None = None,
           prefix: str = "sha256=") -> dict[str, str]:  # fmt: skip
    """Headers of a correctly signed call over exactly `raw` and `stamp` (by default from `siem`,
    a hook without a scope, which the setting's old `NAME=SECRET` syntax knows too)."""
    stamp = stamp if stamp is not None else str(int(time.time()))
    mac = hmac.new(secret.encode(), stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    return {"X-Microseg-Hook": name, "X-Microseg-Timestamp": stamp, "X-Microseg-Signature": prefix + mac,
            "Content-Type": "application/json"}  # fmt: skip


def send(base: str | httpx.Client, raw: bytes, headers: dict[str, str]) -> httpx.Response:
    """POST the call; header values go as UTF-8 bytes, so non-ASCII ones reach the server too."""
    sent = {k.encode(): v.encode() for k, v in headers.items()}
    if isinstance(base, httpx.Client):
        return base.post("/api/v1/hooks/quarantine", content=raw, headers=sent)
    return httpx.post(base + "/api/v1/hooks/quarantine", content=raw, headers=sent, timeout=30)


def hook(api: Api, body: str, **kw: Any) -> httpx.Response:
    raw = body.encode()
    return send(api.client, raw, signed(raw, **kw))


def quarantined(api: Api, name: str) -> str | None:
    labels: dict[str, str] = ok(api.get(f"/workloads/{name}"))["metadata"].get("labels", {})
    return labels.get("quarantine")


@pytest.fixture
def replica(
    settings: config.ServerSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], contextlib.AbstractContextManager[str]]:
    """Starts another `microseg server` process over the same database (its own memory)."""
    monkeypatch.setenv("MICROSEG_HOOK_SECRETS", ",".join(HOOKS))
    return lambda: processes.server(settings.database, tmp_path / "replica.log")


# --- replays ------------------------------------------------------------------------------------


def test_a_captured_call_is_refused_after_a_restart_and_cannot_re_isolate_a_released_workload(
    estate: Api, replica: Replica
) -> None:
    raw = b'{"workload": "prod-web-1", "level": "full", "reason": "beacon"}'
    captured = signed(raw)
    with replica() as first:
        assert ok(send(first, raw, captured))["outcome"] == "quarantined"
    ok(estate.post("/workloads/prod-web-1/release", {"reason": "cleaned"}))
    with replica() as restarted:  # a new process: nothing of the first one's memory
        assert "already used" in problem(send(restarted, raw, captured), 401)["detail"]
    assert "already used" in problem(send(estate.client, raw, captured), 401)["detail"]
    assert quarantined(estate, "prod-web-1") is None


def test_two_replicas_racing_with_one_call_act_once(estate: Api, replica: Replica) -> None:
    raw = b'{"workload": "prod-db-1", "level": "forensics"}'
    captured = signed(raw)
    with replica() as other:
        targets = [other, str(estate.client.base_url)] * 4
        codes: list[int] = []
        start = threading.Barrier(len(targets))

        def fire(base: str) -> None:
            start.wait()
            codes.append(send(base, raw, captured).status_code)

        threads = [threading.Thread(target=fire, args=(t,)) for t in targets]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(codes) == [200] + [401] * (len(targets) - 1)
    quarantines = [e for e in ok(estate.get("/audit", target="Workload/prod-db-1"))["items"]
                   if e["action"] == "quarantine"]  # fmt: skip
    assert len(quarantines) == 1


def test_remembered_calls_are_dropped_once_they_could_not_pass_the_clock_check(estate: Api) -> None:
    with estate.db.write() as conn:
        conn.execute(
            sa.insert(schema.hook_replays).values(digest="a" * 64, hook="edr", expires_at=time.time() - 1)
        )
        conn.execute(
            sa.insert(schema.hook_replays).values(digest="b" * 64, hook="edr", expires_at=time.time() + 600)
        )
    ok(hook(estate, '{"workload": "prod-web-1"}'))
    with estate.db.read() as conn:
        left = set(conn.execute(sa.select(schema.hook_replays.c.digest)).scalars())
        assert replays.count(conn) == 2
    assert "a" * 64 not in left and "b" * 64 in left


# --- what a signed call must look like ----------------------------------------------------------------


@pytest.mark.parametrize(
    "stamp",
    [
        "nan",
        "NaN",
        "inf",
        "-inf",
        "infinity",
        "1e3",
        "{now}e0",
        "+{now}",
        "{now}.0",
        "{now}.5",
        "-{now}",
        "{now}_0",
        "0x{hex}",
        "",
        "１２３",
    ],
    ids=repr,
)
def test_a_timestamp_must_be_whole_seconds_in_digits(estate: Api, stamp: str) -> None:
    now = int(time.time())
    stamp = stamp.format(now=now, hex=f"{now:x}")
    answer = hook(estate, '{"workload": "prod-web-1", "level": "full"}', stamp=stamp)
    assert "X-Microseg-Timestamp" in problem(answer, 401)["detail"]
    assert quarantined(estate, "prod-web-1") is None


def test_the_signature_needs_its_prefix(estate: Api) -> None:
    problem(hook(estate, '{"workload": "prod-web-1"}', prefix=""), 401)
    problem(hook(estate, '{"workload": "prod-web-1"}', prefix="SHA256="), 401)
    problem(hook(estate, '{"workload": "prod-web-1"}', prefix="sha256=é"), 401)
    assert quarantined(estate, "prod-web-1") is None


@pytest.mark.parametrize(
    "body",
    [
        '{"workload": "prod-db-1", "workload": "prod-web-1"}',
        '{"workload": "prod-web-1", "action": "quarantine", "action": "release"}',
        '{"workload": "prod-web-1", "level": "full", "reason": "a", "reason": "b"}',
    ],
    ids=["workload", "action", "reason"],
)
def test_a_signed_body_with_a_key_twice_is_refused(estate: Api, body: str) -> None:
    assert "more than once" in problem(hook(estate, body), 422)["detail"]
    assert quarantined(estate, "prod-web-1") is None and quarantined(estate, "prod-db-1") is None


def test_a_body_that_is_not_json_is_refused(estate: Api) -> None:
    problem(hook(estate, '{"workload": "prod-web-1"'), 422)
    problem(send(estate.client, b'{"workload": "\xff"}', signed(b'{"workload": "\xff"}')), 422)


# --- scopes -------------------------------------------------------------------------------------


def test_a_hook_without_a_scope_may_quarantine_but_not_release(estate: Api) -> None:
    ok(hook(estate, '{"workload": "prod-web-1", "level": "full"}', name="siem", secret=SIEM))
    body = problem(
        hook(estate, '{"workload": "prod-web-1", "action": "release"}', name="siem", secret=SIEM), 403
    )
    assert "may not release" in body["detail"]
    assert quarantined(estate, "prod-web-1") == "full"
    # a hook allowed to release ends a quarantine a hook set
    assert (
        ok(hook(estate, '{"workload": "prod-web-1", "action": "release"}', **AS_EDR))["outcome"] == "released"
    )


def test_a_release_only_hook_may_not_quarantine(estate: Api) -> None:
    problem(hook(estate, '{"workload": "prod-web-1"}', name="soar", secret=SOAR), 403)
    assert quarantined(estate, "prod-web-1") is None


def test_a_hook_may_not_release_a_quarantine_a_person_set_without_release_any(estate: Api) -> None:
    ok(estate.post("/workloads/prod-web-1/quarantine", {"level": "full", "reason": "incident 7"}))
    body = problem(hook(estate, '{"workload": "prod-web-1", "action": "release"}', **AS_EDR), 403)
    assert "token:test-admin(" in body["detail"] and "release-any" in body["detail"]
    assert quarantined(estate, "prod-web-1") == "full"
    released = hook(estate, '{"workload": "prod-web-1", "action": "release"}', name="soar", secret=SOAR)
    assert ok(released)["outcome"] == "released"
    assert quarantined(estate, "prod-web-1") is None


def test_a_person_changing_a_hooks_quarantine_level_makes_it_theirs(estate: Api) -> None:
    ok(hook(estate, '{"workload": "prod-web-1", "level": "forensics"}', **AS_EDR))
    ok(estate.post("/workloads/prod-web-1/quarantine", {"level": "full", "reason": "worse than thought"}))
    problem(hook(estate, '{"workload": "prod-web-1", "action": "release"}', **AS_EDR), 403)
    assert quarantined(estate, "prod-web-1") == "full"


def test_a_hook_may_not_lower_a_persons_full_quarantine(estate: Api) -> None:
    ok(estate.post("/workloads/prod-web-1/quarantine", {"level": "full", "reason": "incident 8"}))
    problem(hook(estate, '{"workload": "prod-web-1", "level": "forensics"}'), 403)
    assert quarantined(estate, "prod-web-1") == "full"
    assert ok(hook(estate, '{"workload": "prod-web-1", "level": "full"}'))["outcome"] == "unchanged"


def test_a_quarantine_label_set_by_hand_counts_as_a_persons(estate: Api) -> None:
    ok(
        estate.post(
            "/labels/bulk", {"workloads": ["prod-web-1"], "add": {"quarantine": "true"}, "remove": []}
        )
    )
    problem(hook(estate, '{"workload": "prod-web-1", "action": "release"}', **AS_EDR), 403)
    assert quarantined(estate, "prod-web-1") == "true"


@pytest.mark.parametrize(
    ("item", "actions"),
    [
        ("edr=s", {"quarantine"}),
        ("edr:quarantine+release=s=x", {"quarantine", "release"}),
        ("edr:release-any=s", {"release", "release-any"}),
    ],
)
def test_hook_scopes_are_read_from_the_setting(item: str, actions: set[str]) -> None:
    [found] = config.ServerSettings(hook_secrets=(item,)).hooks().values()
    assert (found.name, set(found.actions)) == ("edr", actions)


@pytest.mark.parametrize("item", ["edr:delete=s", "edr:=s", "edr", "=s", "edr:quarantine,release=s"])
def test_a_malformed_hook_setting_stops_the_start(item: str) -> None:
    with pytest.raises(errors.UserError):
        config.ServerSettings(hook_secrets=(item,))


# --- a hostname is the agents' word ---------------------------------------------------------------


def test_an_agent_claiming_a_victims_hostname_cannot_shield_it_from_a_quarantine_by_hostname(
    estate: Api,
) -> None:
    made = ok(estate.post("/enrollment-tokens", {"name": "dev", "labels": {"env": "dev"}}), 201)
    inventory = {"hostname": "intruder", "addresses": ["10.99.0.5"], "os": "linux"}
    agent = estate.as_(ok(estate.as_("none").post(
        "/agent/enroll", {"token": made["token"], "inventory": inventory}), 201)["credential"])  # fmt: skip
    ok(agent.post("/agent/heartbeat", {**inventory, "hostname": "prod-web-1"}))
    done = ok(hook(estate, '{"hostname": "prod-web-1", "level": "full", "reason": "beacon"}'))
    assert {done["workload"], *done["alsoQuarantined"]} == {"intruder", "prod-web-1"}
    assert quarantined(estate, "prod-web-1") == "full" and quarantined(estate, "intruder") == "full"
    release = hook(estate, '{"hostname": "prod-web-1", "action": "release"}', secret=EDR, name="edr")
    assert "reported by intruder, prod-web-1" in problem(release, 422)["detail"]
    assert quarantined(estate, "prod-web-1") == "full"

"""`longpoll.FastPath` answers the ruleset polls the route would accept, before the router: every
request here is sent to the server as it runs and to an app over the same database without the
fast path, and both must answer alike (status, media type, ETag, body, the 401's challenge).
Malformed polls fall through to the route and get its 422; other tokens get its 401 or 403."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import exc as sa_exc

from microseg.model import rulesetdelta
from microseg.server import app as server_app
from microseg.server import config, longpoll, problems
from microseg.store import tokens
from tests.server import running
from tests.server.conftest import Api, ok
from tests.server.estates import provision_example
from tests.server.test_agents import enroll

WEB = {"env": "prod", "app": "crm", "role": "web"}
DELTAS = f"{rulesetdelta.MEDIA_TYPE}, application/json"


@pytest.fixture
def routed(api: Api, settings: config.ServerSettings) -> Iterator[httpx.Client]:
    """An app over the same database without the fast path: every poll goes through FastAPI."""
    app = server_app.create_app(settings, api.db, migrate_schema=False)
    del app.build_middleware_stack  # the class's own again: no fast path (app._polls_first)
    with running.serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def _seen(response: httpx.Response) -> tuple[Any, ...]:
    keep = ("content-type", "etag", "www-authenticate")
    return response.status_code, {k: response.headers.get(k) for k in keep}, response.content


def _both(api: Api, routed: httpx.Client, params: Any, headers: dict[str, str]) -> httpx.Response:
    fast = api.client.get(longpoll.PATH, params=params, headers=headers)
    slow = routed.get(longpoll.PATH, params=params, headers=headers)
    assert _seen(fast) == _seen(slow), (params, headers)
    return fast


def test_the_fast_path_answers_every_poll_as_the_route_does(api: Api, routed: httpx.Client) -> None:
    agent = enroll(api, "web-9", "10.77.1.99", labels=WEB)
    bearer = agent.headers()
    assert _both(api, routed, {}, bearer).status_code == 204  # nothing provisioned yet
    provision_example(api)
    whole = _both(api, routed, {}, bearer)
    current = ok(whole)["hash"]
    assert whole.headers["etag"] == f'"{current}"'
    assert _both(api, routed, {"known": current}, bearer).status_code == 304
    assert _both(api, routed, {}, {**bearer, "If-None-Match": f'"{current}"'}).status_code == 304
    assert _both(api, routed, [("wait", "abc"), ("wait", "0"), ("known", current)], bearer).status_code == 304
    assert _both(api, routed, {"known": "0" * 64}, {**bearer, "Accept": DELTAS}).status_code == 200
    ok(api.call("PUT", "/workloads/web-9/mode", json={"mode": "enforce"}))
    delta = _both(api, routed, {"known": current}, {**bearer, "Accept": DELTAS})
    assert delta.headers["content-type"] == rulesetdelta.MEDIA_TYPE and delta.json()["base"] == current


@pytest.mark.parametrize(
    ("params", "headers", "status"),
    [
        ({"wait": "-1"}, {}, 422),
        ({"wait": "nan"}, {}, 422),
        ({"wait": "inf"}, {}, 422),
        ({"wait": "3601"}, {}, 422),
        ({"wait": ""}, {}, 422),
        ({"known": "x" * 81}, {}, 422),
        ({"known": "\x00"}, {}, 422),  # the input guard's refusal, though the fast path is outside it
        ({}, {"Accept": "a" * 1001}, 422),
        ({}, {"Authorization": "Bearer msa_unknown"}, 401),
        ({}, {"Authorization": "Basic msa_unknown"}, 401),
        ({}, {"Authorization": ""}, 401),
        ({}, {"Authorization": "Bearer msk_not_an_agent"}, 401),
    ],
)
def test_malformed_polls_and_foreign_tokens_get_the_routes_answer(
    api: Api, routed: httpx.Client, params: dict[str, str], headers: dict[str, str], status: int
) -> None:
    agent = enroll(api, "web-9", "10.77.1.99", labels=WEB)
    answer = _both(api, routed, params, {**agent.headers(), **headers})
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/problem+json"


def test_an_api_token_is_refused_and_other_methods_are_not_taken(api: Api, routed: httpx.Client) -> None:
    assert _both(api, routed, {}, api.headers()).status_code == 403
    assert api.client.post(longpoll.PATH, headers=api.headers()).status_code == 405


def _scope(query: bytes, headers: list[tuple[bytes, bytes]], method: str = "GET") -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": longpoll.PATH,
        "query_string": query,
        "headers": headers,
    }


AGENT = [(b"authorization", b"Bearer msa_abc")]


@pytest.mark.parametrize(
    ("query", "headers", "known", "wait", "deltas"),
    [
        (b"", AGENT, None, 0.0, False),
        (b"known=h1&wait=30", AGENT, "h1", 30.0, False),
        (b"wait=abc&wait=2", AGENT, None, 2.0, False),  # the last of a repeated parameter
        (b"", [*AGENT, (b"if-none-match", b'"h2"')], "h2", 0.0, False),
        (b"known=h3", [*AGENT, (b"accept", DELTAS.encode())], "h3", 0.0, True),
    ],
)
def test_the_fast_path_takes_well_formed_agent_polls(
    query: bytes, headers: list[tuple[bytes, bytes]], known: str | None, wait: float, deltas: bool
) -> None:
    taken = longpoll._taken(_scope(query, headers))
    assert taken is not None
    question, waits = taken
    assert (question.known, waits, question.deltas) == (known, wait, deltas)
    assert question.credential == tokens.digest("msa_abc")


@pytest.mark.parametrize(
    ("query", "headers", "method"),
    [
        (b"wait=-1", AGENT, "GET"),
        (b"wait=nan", AGENT, "GET"),
        (b"wait=1e9", AGENT, "GET"),
        (b"known=" + b"x" * 81, AGENT, "GET"),
        (b"", [*AGENT, (b"accept", b"a" * 1001)], "GET"),
        (b"", [(b"authorization", b"Bearer msk_api")], "GET"),
        (b"", [], "GET"),
        (b"", AGENT, "POST"),
        (b"known=%00", AGENT, "GET"),  # the input guard refuses it
        (b"", [*AGENT, (b"content-length", b"5")], "GET"),  # a body: the size limit judges it
        (b"", [*AGENT, (b"transfer-encoding", b"chunked")], "GET"),
    ],
)
def test_the_fast_path_leaves_everything_else_to_the_route(
    query: bytes, headers: list[tuple[bytes, bytes]], method: str
) -> None:
    assert longpoll._taken(_scope(query, headers, method)) is None


def test_a_poll_with_a_body_over_the_limit_gets_the_size_limits_413(
    api: Api, settings: config.ServerSettings
) -> None:
    agent = enroll(api, "web-9", "10.77.1.99", labels=WEB)
    body = b"x" * (settings.max_body_bytes + 1)
    answer = api.client.request("GET", longpoll.PATH, headers=agent.headers(), content=body)
    assert answer.status_code == 413
    assert answer.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (RuntimeError("a bug"), 500),
        (sa_exc.OperationalError("SELECT 1", {}, Exception("connection refused")), None),
    ],
)
def test_an_error_answering_a_poll_is_problem_json_as_the_app_renders_it(
    api: Api, monkeypatch: pytest.MonkeyPatch, error: Exception, status: int | None
) -> None:
    agent = enroll(api, "web-9", "10.77.1.99", labels=WEB)

    async def failing(*_: Any) -> None:
        raise error

    monkeypatch.setattr(longpoll, "answer", failing)
    answer = api.client.get(longpoll.PATH, headers=agent.headers())
    expected = status or problems.from_database(error).status  # type: ignore[arg-type]
    assert answer.status_code == expected >= 500
    assert answer.headers["content-type"] == "application/problem+json"
    assert "a bug" not in answer.text and "connection refused" not in answer.text

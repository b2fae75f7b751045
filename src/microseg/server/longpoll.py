"""The ruleset long-poll over HTTP: a request -> a question for the feed -> the response, taken by
the FastAPI route and by `FastPath`, which answers the well-formed polls before the router.

Fed by `GET /api/v1/agent/ruleset`; feeds `server/feed`. The FastAPI route documents the endpoint
and answers whatever is unusual (a malformed query gets its 422 there); `FastPath` skips routing
and dependency solving for the common case: an agent credential, a `known` hash, a `wait`. At ten
thousand parked agents a provision answers every one of them at once, and the framework's work
per request (matching ~100 routes, solving dependencies) cost more than computing the answer.
Both paths build the question with `ask` and the response with `response`, so they cannot
answer differently.

Does not: authenticate beyond taking the credential's digest (the feed looks every digest of its
round up, and answers `revoked` for an unknown one), or wait itself (the feed parks the poll).
"""

from __future__ import annotations

import math
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from microseg.model import rulesetdelta
from microseg.server import feed, inputguard, problems
from microseg.server.problems import Problem
from microseg.server.runtime import Runtime
from microseg.store import tokens

PATH = "/api/v1/agent/ruleset"
# The route's bounds too (routes_agent.ruleset): a poll the fast path takes, the route accepts.
MAX_KNOWN = 80
MAX_WAIT = 3600.0
MAX_ACCEPT = 1000
AGENT_PREFIX = "msa_"


def ask(credential: str, known: str | None, if_none_match: str | None, accept: str | None) -> feed.Ask:
    """The question of a poll: `known` or else the ETag it sent; deltas when it accepts them."""
    known = known or (if_none_match.strip().strip('"') if if_none_match else None)
    return feed.Ask(credential, known, accept is not None and rulesetdelta.MEDIA_TYPE in accept)


async def answer(rt: Runtime, question: feed.Ask, wait: float) -> Response:
    """The feed's answer as the response: the document or delta (200, with its ETag), unchanged
    (304), nothing provisioned (204); a Problem (401) for an unknown or revoked credential."""
    assert rt.feed is not None  # the app factory sets it
    found = await rt.feed.poll(question, min(wait, rt.settings.long_poll_max))
    if found.revoked:
        told = "this agent credential was revoked" if found.waited else "unknown or revoked token"
        raise Problem(401, "Unauthorized", told)
    if found.final:
        return Response(found.body, media_type=found.media_type, headers={"ETag": f'"{found.hash}"'})
    return Response(status_code=204 if found.hash is None else 304)


class FastPath:
    """Answers well-formed ruleset polls of agent credentials before the app and all of its
    middleware (`app.create_app` puts it outermost); passes every other request, and any poll
    it would have to refuse as malformed, to `app`.

    Outermost, because a parked poll holds a coroutine frame in every layer it passes: with
    10,000 agents parked the server's RSS was 21 MB lower in two fleet runs (SQLite; development
    measurements; the fan-out's CPU moved within run-to-run noise). So it does here what the
    layers it skips would do: a poll with a body (the size limit reads it) or a URL the input
    guard refuses goes to the app, and an error is answered by the app's own last handlers."""

    def __init__(self, app: ASGIApp, rt: Runtime) -> None:
        self.app, self.rt = app, rt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        taken = _taken(scope) if scope["type"] == "http" and scope["path"] == PATH else None
        if taken is None:
            await self.app(scope, receive, send)
            return
        question, wait = taken
        try:
            response = await answer(self.rt, question, wait)
        except Problem as exc:  # as the app's handler renders it (problems.install)
            response = problems.response(exc, Request(scope), {"WWW-Authenticate": "Bearer"})
        except Exception as exc:  # as the app's last handlers answer it
            response = problems.unhandled(exc, Request(scope))
        await response(scope, receive, send)


def _taken(scope: Scope) -> tuple[feed.Ask, float] | None:
    """The question and wait of a poll the route would accept as it is, or None."""
    if scope["method"] != "GET" or inputguard.url_refusal(scope) is not None:
        return None
    headers: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        headers.setdefault(name, value)  # the first of a repeated header, as Starlette reads it
    if b"content-length" in headers or b"transfer-encoding" in headers:
        return None  # a body: the size limit's to judge
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(AGENT_PREFIX):
        return None  # API tokens and missing ones: the route's 401 or 403
    try:
        query = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
        wait = float(query.get("wait", 0))  # a repeated parameter: the last, as Starlette reads it
    except ValueError:
        return None
    known = query.get("known")
    accept, etag = headers.get(b"accept"), headers.get(b"if-none-match")
    if not (0 <= wait <= MAX_WAIT and math.isfinite(wait)) or len(known or "") > MAX_KNOWN:
        return None
    if accept is not None and len(accept) > MAX_ACCEPT:
        return None
    return ask(tokens.digest(token), known, _text(etag), _text(accept)), wait


def _text(header: bytes | None) -> str | None:
    return header.decode("latin-1") if header is not None else None

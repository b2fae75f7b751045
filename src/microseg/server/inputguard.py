"""Requests are checked at the edge, before any route: JSON nesting, and text the store cannot keep.

Sits between the body-size limit (`app.BodyLimit`, outside) and the routes (inside). It reads a
request body whole, once, so a body over the size limit fails here, where the limit turns it into
a 413 (inside FastAPI the same failure would become a 400 "error parsing the body"), and hands the
same bytes on. What no route should have to think about is refused as problem+json:

- JSON nested deeper than `MAX_DEPTH` (400): parsers, validators and encoders recurse, and a few
  hundred levels exhaust Python's stack; no API body needs more than a dozen.
- text with a NUL character or a lone surrogate (`"\\ud800"` unpaired), in a JSON body (422
  naming the field), the path or the query (422): valid JSON and valid URLs, but text PostgreSQL
  cannot store or even compare (and SQLite's UTF-8 cannot encode a surrogate). Refused here for
  every route alike, rather than failing in whichever store call meets it first.

What it deliberately does not do: validate anything else (the routes' models do), or look at
bodies that are not JSON.
"""

from __future__ import annotations

import array
import itertools
import json
import re
import urllib.parse
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from microseg.server import problems

MAX_DEPTH = 64
"""Arrays and objects a JSON body may nest."""
UNSTORABLE = "text holds a NUL character or a lone surrogate (\\ud800-\\udfff unpaired): it cannot be stored"
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'[]{}"')))
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:[dD][89a-fA-F]|0000)")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_STEPS = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")


def too_deep(body: bytes) -> bool:
    """Whether arrays and objects nest deeper than MAX_DEPTH (brackets inside strings do not count).

    Linear, without recursion and in C loops (a third of parsing's cost): escaped backslashes and
    quotes go, then everything but quotes and brackets; what lies between quotes is inside a
    string, and what remains is summed as +1/-1."""
    if body.count(b"[") + body.count(b"{") <= MAX_DEPTH:
        return False
    plain = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = plain.translate(None, _NOT_STRUCTURE)
    brackets = b"".join(skeleton.split(b'"')[0::2])
    steps = array.array("b", brackets.translate(_STEPS))
    return max(itertools.accumulate(steps), default=0) > MAX_DEPTH


def unstorable_field(body: bytes) -> str | None:
    """The field path of the first text (value or key) holding a NUL or a lone surrogate; None
    when there is none, or the body is not JSON (the route reports that). Only bodies with such
    escapes are parsed here: a NUL or a surrogate can reach JSON text only as an escape."""
    if _SUSPECT_ESCAPE.search(body) is None:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    stack: list[tuple[str, Any]] = [("body", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str) and _UNSTORABLE.search(value):
            return path
        if isinstance(value, dict):
            for key, item in value.items():
                if _UNSTORABLE.search(key):
                    return path
                stack.append((f"{path}.{key}", item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
    return None


def url_refusal(scope: Scope) -> problems.Problem | None:
    """A NUL in the path or the query (a URL cannot carry a surrogate: it decodes as U+FFFD)."""
    query = urllib.parse.unquote(scope.get("query_string", b"").decode("latin-1"))
    for field, text in (("path", scope.get("path", "")), ("query", query)):
        if "\x00" in text:
            return problems.Problem(422, "Invalid request", f"{field}: {UNSTORABLE}", errors=[_error(field)])
    return None


def body_refusal(body: bytes) -> problems.Problem | None:
    """Why a JSON body is refused before any route sees it, or None."""
    if too_deep(body):
        return problems.Problem(400, "Malformed request", f"JSON nested deeper than {MAX_DEPTH} levels")
    field = unstorable_field(body)
    if field is not None:
        return problems.Problem(422, "Invalid request", f"{field}: {UNSTORABLE}", errors=[_error(field)])
    return None


def _error(field: str) -> dict[str, str]:
    return {"field": field, "message": UNSTORABLE}


class InputGuard:
    """Refuses what `url_refusal` and `body_refusal` name; reads each body whole and replays it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = url_refusal(scope)
        if problem is not None:
            await send_problem(problem, scope, send)
            return
        if scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        body, last = await _read(receive)
        problem = body_refusal(body) if _is_json(scope) else None
        if problem is not None:
            await send_problem(problem, scope, send)
            return
        await self.app(scope, _replay(body, last, receive), send)


async def send_problem(problem: problems.Problem, scope: Scope, send: Send) -> None:
    """A problem as the whole response, for middleware that answers before the app."""
    data = json.dumps(problem.body(scope.get("path", ""))).encode()
    headers = [(b"content-type", problems.MEDIA_TYPE.encode()), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": problem.status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def _read(receive: Receive) -> tuple[bytes, Message]:
    """The whole body, and the last message (a disconnect when the client left half-way)."""
    chunks: list[bytes] = []
    message: Message = {"type": "http.request", "more_body": True}
    while message.get("more_body", False):
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
    return b"".join(chunks), message


def _is_json(scope: Scope) -> bool:
    """Whether FastAPI would read the body as JSON (it does when no content type is given)."""
    kind = dict(scope.get("headers") or {}).get(b"content-type", b"").decode("latin-1").lower()
    return not kind or "json" in kind


def _replay(body: bytes, last: Message, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()  # after the body: the disconnect, when it comes
        sent = True
        if last["type"] != "http.request":
            return last
        return {"type": "http.request", "body": body, "more_body": False}

    return replay

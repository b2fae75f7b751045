"""RFC 7807 problem details: every error the API returns is `application/problem+json`.

Raised as `Problem` by the routes and the service; microseg's own errors (bad input, unknown
names), FastAPI's request validation and unexpected exceptions are translated here, so that a
client never sees an HTML page or a traceback, and a 5xx only ever means a bug, or a store that
cannot take a write now (a full disk: 503 with `Retry-After`, so agents keep their spooled flows
and come back).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from microseg import errors
from microseg.server import compose, kinds

MEDIA_TYPE = "application/problem+json"
BASE = "https://microseg.io/problems/"
STORAGE_RETRY_AFTER = 60
"""Seconds a client is asked to wait when the store is full (someone has to free space)."""
UNEXPECTED = "the server could not complete the request"
"""What a 500 says: nothing of the error, which is logged."""
SQLITE_FULL = 13
log = logging.getLogger("microseg.server")


class Problem(Exception):  # noqa: N818 - RFC 7807 calls it a problem
    """An error response: status, a short title, a human detail, and extra members; `headers`
    go with the response (`Retry-After` on 429 and 503)."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status, self.title, self.detail, self.extra = status, title, detail, extra
        self.headers = headers or {}

    def body(self, instance: str) -> dict[str, Any]:
        """The problem document."""
        slug = self.title.lower().replace(" ", "-")
        return {
            "type": BASE + slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
            **self.extra,
        }


def response(problem: Problem, request: Request, headers: dict[str, str] | None = None) -> JSONResponse:
    """The problem as a response."""
    return JSONResponse(
        problem.body(request.url.path), problem.status, headers=headers, media_type=MEDIA_TYPE
    )


def from_error(exc: errors.MicrosegError) -> Problem:
    """microseg's own errors as problems."""
    if isinstance(exc, compose.InvalidError):
        return Problem(422, "Invalid objects", str(exc).splitlines()[0], problems=exc.problems)
    if isinstance(exc, kinds.ObjectError):  # as InvalidError's: the client maps objects to files
        found = {"object": exc.object, "field": exc.field, "message": exc.problem}
        return Problem(422, "Invalid objects", str(exc), problems=[found])
    if isinstance(exc, errors.PolicyFileError):
        return Problem(
            422,
            "Invalid policy",
            (exc.problems and str(exc).splitlines()[0]) or str(exc),
            problems=[{"object": p.file, "field": p.field, "message": p.message} for p in exc.problems],
        )
    if isinstance(exc, errors.LookupFailedError):
        return Problem(404, "Not found", str(exc))
    if isinstance(exc, errors.UserError):
        field = getattr(exc, "field", "")
        named: dict[str, Any] = {"field": field} if field else {}
        return Problem(422, "Invalid request", str(exc), **named)
    if isinstance(exc, errors.TransientError):
        return Problem(503, "Try again", str(exc))
    return Problem(500, "Internal error", UNEXPECTED)


def install(app: FastAPI) -> None:
    """Register the translating handlers."""

    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        return response(exc, request, {**headers, **exc.headers})

    @app.exception_handler(errors.MicrosegError)
    async def on_error(request: Request, exc: errors.MicrosegError) -> JSONResponse:
        return response(from_error(exc), request)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        found = [
            {"field": ".".join(str(p) for p in e.get("loc", ())), "message": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        return response(
            Problem(422, "Invalid request", "the request does not match the API", errors=found), request
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return response(Problem(exc.status_code, _title(exc.status_code), str(exc.detail)), request)

    @app.exception_handler(sa_exc.DBAPIError)
    async def on_database(request: Request, exc: sa_exc.DBAPIError) -> JSONResponse:
        return unhandled(exc, request)

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        return unhandled(exc, request)


def unhandled(exc: Exception, request: Request) -> JSONResponse:
    """The answer to an exception nothing translated: a database error as `from_database` says,
    anything else a 500 that tells nothing of it; logged with its traceback unless it is a 503.
    Also for `longpoll.FastPath`, which answers outside the app's handlers."""
    found = (
        from_database(exc)
        if isinstance(exc, sa_exc.DBAPIError)
        else Problem(500, "Internal error", UNEXPECTED)
    )
    if found.status != 503:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
    return response(found, request, found.headers)


def from_database(exc: sa_exc.DBAPIError) -> Problem:
    """A full store as 503 with Retry-After (nothing was written; the same request can succeed
    once space is freed); any other database error is a bug (500)."""
    if storage_full(exc):
        log.error("the database is full: %s", exc.orig)
        return Problem(
            503,
            "Storage full",
            "the server's database has no room for this write; try again later",
            headers={"Retry-After": str(STORAGE_RETRY_AFTER)},
        )
    return Problem(500, "Internal error", UNEXPECTED)


def storage_full(exc: sa_exc.DBAPIError) -> bool:
    """Whether the driver says the disk (or the database's size limit) is full: SQLite's
    SQLITE_FULL, PostgreSQL's class 53 (insufficient resources: disk full, out of memory, too
    many connections), which pass once an operator acts."""
    orig = exc.orig
    if getattr(orig, "sqlite_errorcode", None) == SQLITE_FULL:
        return True
    sqlstate = getattr(orig, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith("53")


def _title(status: int) -> str:
    return {404: "Not found", 405: "Method not allowed", 413: "Request too large"}.get(status, "Error")

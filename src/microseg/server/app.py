"""The app factory: routers, problem+json handlers, the body-size limit, background tasks.

`create_app(settings)` opens the database, runs migrations (`migrate=True`) and returns the
FastAPI app; the lifespan starts the state watcher (wakes long-polls on any replica's change) and
the offline detector, and stops both on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pydantic
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from microseg import __version__
from microseg.server import (
    config,
    feed,
    inputguard,
    kinds,
    longpoll,
    models,
    problems,
    routes_admin,
    routes_agent,
    routes_analytics,
    routes_console,
    routes_flows,
    routes_hooks,
    routes_objects,
    routes_policy,
    routes_rollout,
    runtime,
    streaming,
)
from microseg.store import agents, database, events, migrate

log = logging.getLogger("microseg.server")


_NO_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI).parameters
    else {}
)
"""FastAPI's OpenTelemetry hooks (since 0.16x) look the global providers up on every request, an
environment lookup each: 8 % of the server's CPU during a 10,000-agent fan-out. microseg exports
Prometheus metrics and streams events; it sets no OpenTelemetry provider up."""


def open_database(settings: config.ServerSettings) -> database.Database:
    """The configured database (SQLite in the data directory unless a URL is given)."""
    return database.Database(settings.database or database.sqlite_url(settings.data_dir))


def create_app(
    settings: config.ServerSettings, db: database.Database | None = None, *, migrate_schema: bool = True
) -> FastAPI:
    """A ready app over `db` (or the configured database)."""
    db = db or open_database(settings)
    if migrate_schema:
        migrate.upgrade(db)
    rt = runtime.Runtime(settings, db)
    rt.feed = feed.Feed(rt)
    streams = streaming.configure(settings, db)  # a bad sink URL stops the start-up here

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(rt.watch()),
            asyncio.create_task(_offline_detector(rt)),
            asyncio.create_task(routes_flows.expirer(rt)),
            asyncio.create_task(streams.run()),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(
        title="microseg control plane",
        version=__version__,
        lifespan=lifespan,
        description="Label-based microsegmentation: inventory, draft policy, provisioned "
        "versions, agents and flows. Errors are RFC 7807 problem+json.",
        # FastAPI's /docs and /redoc pages load their scripts from a CDN and run inline code: no
        # third party's script on the console's origin. /openapi.json stays for tools.
        docs_url=None,
        redoc_url=None,
        **_NO_TELEMETRY,
    )
    app.state.runtime = rt
    problems.install(app)
    app.add_middleware(inputguard.InputGuard)  # inside BodyLimit: a body too large fails as a 413
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    _polls_first(app, rt)
    for kind in kinds.KINDS.values():
        if kind.name == "Workload":
            app.include_router(routes_objects.router)  # its /workloads/{name}/... before the generic routes
        app.include_router(routes_objects.object_router(kind))
    for module in (
        routes_policy,
        routes_agent,
        routes_admin,
        routes_flows,
        routes_analytics,
        routes_hooks,
        routes_rollout,
    ):
        app.include_router(module.router)
    app.include_router(routes_admin.plain)
    _publish(app, FlowBatch=models.FLOW_BATCH, QuarantineHook=pydantic.TypeAdapter(models.QuarantineHook))

    @app.get("/healthz", tags=["admin"], summary="Liveness (unauthenticated, like the OpenAPI document)")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # The console last: its `/` and `/console/...` must never shadow an API route.
    app.include_router(routes_console.router)
    app.include_router(routes_console.pages)
    return app


def _polls_first(app: FastAPI, rt: runtime.Runtime) -> None:
    """Put `longpoll.FastPath` outside every middleware, Starlette's own included (its
    `add_middleware` would put it inside Starlette's error handler). The stack is built on the
    first request; deleting the instance's `build_middleware_stack` before then undoes this."""
    build = app.build_middleware_stack

    def with_fast_path() -> ASGIApp:
        return longpoll.FastPath(build(), rt)

    app.build_middleware_stack = with_fast_path  # type: ignore[method-assign]


def _publish(app: FastAPI, **published: pydantic.TypeAdapter[Any]) -> None:
    """Add the schemas of bodies that routes validate themselves to the OpenAPI components."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = original()
        found = spec.setdefault("components", {}).setdefault("schemas", {})
        for name, adapter in published.items():
            schema = adapter.json_schema(ref_template="#/components/schemas/{model}")
            found.update(schema.pop("$defs", {}))
            found[name] = schema
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


async def _offline_detector(rt: runtime.Runtime) -> None:
    """Mark agents silent for `offline_after` seconds offline, with one event each."""
    every = max(0.5, min(10.0, rt.settings.offline_after / 3))
    while True:
        await asyncio.sleep(every)
        try:
            await asyncio.to_thread(_mark_offline, rt)
        except Exception:  # a database hiccup must not end the detector; it is logged
            log.warning("offline detection failed; retrying", exc_info=True)


def _mark_offline(rt: runtime.Runtime) -> None:
    with rt.db.write() as conn:
        gone = agents.mark_offline(conn, time.time() - rt.settings.offline_after)
        events.add_many(
            conn,
            [
                {
                    "kind": "agent-offline",
                    "workload": a["workload"],
                    "details": {"agent": a["id"]},
                    "message": f"{a['workload']}: agent silent since {time.ctime(a['last_seen'])}",
                }
                for a in gone
            ],
        )


class BodyLimit:
    """413 for request bodies over `limit` bytes, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or {}).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _too_large(scope, send, self.limit)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLargeError
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLargeError:
            await _too_large(scope, send, self.limit)


class _TooLargeError(Exception):
    pass


async def _too_large(scope: Scope, send: Send, limit: int) -> None:
    problem = problems.Problem(413, "Request too large", f"request bodies are limited to {limit} bytes")
    await inputguard.send_problem(problem, scope, send)

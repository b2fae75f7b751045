"""Small FastAPI dependencies shared by the routers."""

from __future__ import annotations

from fastapi import Request

from microseg.server.runtime import Runtime


async def runtime(request: Request) -> Runtime:
    """The process's runtime (set by the app factory); async, so that resolving it costs no trip
    through the thread pool (every request asks for it)."""
    rt: Runtime = request.app.state.runtime
    return rt


def client_address(request: Request) -> str:
    """The caller's address (for rate limits): the TCP peer, or what a trusted proxy forwarded.

    Headers are never read here: uvicorn rewrites the peer from `X-Forwarded-For` only when the
    connection comes from `--trusted-proxy` (cli/serve.py `uvicorn_config`)."""
    return request.client.host if request.client else "unknown"

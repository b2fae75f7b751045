"""A real uvicorn serving an app on 127.0.0.1 (a free port) in a thread, always stopped, configured
as `microseg server` configures it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from microseg.cli import serve as serving


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """The base URL of `app` served by uvicorn until the block ends (also on failure)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # `microseg server`'s own uvicorn settings (which forwarded headers count, above all).
    settings = app.state.runtime.settings
    server = uvicorn.Server(serving.uvicorn_config(app, settings, log_level="warning", graceful=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()

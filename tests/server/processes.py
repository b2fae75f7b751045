"""Real `microseg server` processes on 127.0.0.1 (free ports), always stopped, for the proofs
that need separate processes: two replicas on one PostgreSQL, and restarts."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def server(database_url: str, log: Path, port: int | None = None) -> Iterator[str]:
    """A server process over `database_url`; yields its base URL; killed at the end whatever happens."""
    port = port or free_port()
    # its own data directory: a first start writes the admin token there when output is not a tty
    command = [sys.executable, "-m", "microseg", "server", "--host", "127.0.0.1", "--port", str(port),
               "--database", database_url, "--data-dir", str(log.parent / f"server-data-{port}"),
               "--control-plane", "10.77.0.1:8440", "--log-level", "warning"]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log)
        yield url
    finally:
        stop(process)


def wait_ready(
    url: str, process: subprocess.Popen[bytes], log: Path, verify: ssl.SSLContext | bool = True
) -> None:
    """Until `/healthz` answers 200; RuntimeError (with the log's tail) when the server exits or
    is not ready within 30 s."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/healthz", verify=verify, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"the server did not become ready:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen[bytes], *, hard: bool = False) -> None:
    """SIGKILL (hard) or SIGTERM with a SIGKILL after 10 s."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@contextmanager
def killable_server(database_url: str, log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Like `server`, also handing out the process so a test can kill it mid-flight."""
    port = free_port()
    command = [sys.executable, "-m", "microseg", "server", "--host", "127.0.0.1", "--port", str(port),
               "--database", database_url, "--log-level", "warning"]  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log)
        yield url, process
    finally:
        stop(process)

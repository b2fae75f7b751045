"""Where items go: syslog over UDP, TCP or TLS (RFC 5424, or CEF inside RFC 5424), webhooks
(signed JSON) and JSON-lines files.

Fed by the streamer, one page of items at a time; `send` returns once the page is handed over,
raises TransientError when trying again may work (the peer is down, 5xx, 408, 429) and
PermanentError when it will not (a webhook answering 4xx). Blocking I/O with timeouts: the
streamer runs sinks in its own thread.

What it deliberately does not do: retry, remember positions or know about the database.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import select
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import httpx

from microseg import errors
from microseg.server.streaming import formats, items, specs

TIMEOUT = 3.0
"""Seconds a connect or a send may take: short enough for the server's 5 s graceful shutdown."""
SIGNATURE = "X-Microseg-Signature"
TIMESTAMP = "X-Microseg-Timestamp"


class Sink(Protocol):
    """Something a page of items can be sent to."""

    def send(self, page: Sequence[items.Item]) -> None: ...

    def close(self) -> None: ...


Render = Callable[[items.Item], bytes]


def open_sink(spec: specs.SinkSpec) -> Sink:
    """The sink of a spec, not yet connected (TLS settings are loaded now, so bad files fail early)."""
    if spec.kind == "webhook":
        return WebhookSink(spec)
    render = renderer(spec)
    if spec.kind == "file":
        return FileSink(spec.path, render)
    if spec.transport == "syslog+udp":
        return UdpSink(spec.host, spec.port, render)
    context = tls_context(spec) if spec.transport == "syslog+tls" else None
    return StreamSink(spec.host, spec.port, render, context)


def renderer(spec: specs.SinkSpec) -> Render:
    """How one item becomes bytes for this sink."""
    host = socket.gethostname()
    limit = spec.max_bytes if spec.transport == "syslog+udp" else None
    if spec.kind == "file":
        if spec.format == "json":
            return formats.json_line
        if spec.format == "cef":
            return lambda item: formats.cef(item).encode() + b"\n"
        return lambda item: formats.rfc5424(item, host=host, facility=spec.facility) + b"\n"
    if spec.format == "cef":
        return lambda item: formats.rfc5424(
            item, host=host, facility=spec.facility, msg=formats.cef(item), max_bytes=limit
        )
    return lambda item: formats.rfc5424(item, host=host, facility=spec.facility, max_bytes=limit)


def tls_context(spec: specs.SinkSpec) -> ssl.SSLContext:
    """Verify the peer against `ca` (or the system store); present `cert`/`key` when given."""
    try:
        context = ssl.create_default_context(cafile=spec.ca)
        if spec.cert:
            context.load_cert_chain(spec.cert, spec.key)
    except (OSError, ssl.SSLError) as exc:
        raise errors.UserError(f"{specs.SETTING}: {spec.name}: TLS files: {exc}") from None
    return context


class UdpSink:
    """One datagram per message (RFC 5426); delivery is best effort, as UDP is."""

    def __init__(self, host: str, port: int, render: Render) -> None:
        self.address, self.render = (host, port), render
        self.sock: socket.socket | None = None

    def send(self, page: Sequence[items.Item]) -> None:
        try:
            if self.sock is None:
                info = socket.getaddrinfo(*self.address, type=socket.SOCK_DGRAM)[0]
                self.sock = socket.socket(info[0], socket.SOCK_DGRAM)
                self.sock.settimeout(TIMEOUT)
                self.sock.connect(info[4])
            for item in page:
                self.sock.send(self.render(item))
        except OSError as exc:  # a connected UDP socket reports an earlier ICMP "port unreachable"
            self.close()
            raise errors.TransientError(f"syslog {self.address}: {exc}") from exc

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class StreamSink:
    """Syslog over TCP or TLS with octet-counting framing (RFC 6587 section 3.4.1, RFC 5425)."""

    def __init__(self, host: str, port: int, render: Render, context: ssl.SSLContext | None) -> None:
        self.host, self.port, self.render, self.context = host, port, render, context
        self.sock: socket.socket | None = None

    def send(self, page: Sequence[items.Item]) -> None:
        frames = b"".join(_frame(self.render(item)) for item in page)
        try:
            self.sock = self._usable() or self._connect()
            self.sock.sendall(frames)
        except OSError as exc:
            self.close()
            raise errors.TransientError(f"syslog {self.host}:{self.port}: {exc}") from exc

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=TIMEOUT)
        if self.context is not None:
            try:
                return self.context.wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
        return sock

    def _usable(self) -> socket.socket | None:
        """The open connection unless the peer closed it: a write into a socket the peer already
        closed succeeds once and is lost, so look before writing."""
        if self.sock is None:
            return None
        readable, _, _ = select.select([self.sock], [], [], 0)
        if readable and not _still_open(self.sock):
            self.close()
            return None
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None


def _still_open(sock: socket.socket) -> bool:
    """Whether a readable socket is still open. Receivers send nothing, so what arrives is
    discarded; over TLS 1.3 it may be only a session ticket, which leaves nothing to read."""
    sock.settimeout(0)
    try:
        return bool(sock.recv(4096))
    except (ssl.SSLWantReadError, BlockingIOError):
        return True
    except OSError:
        return False
    finally:
        sock.settimeout(TIMEOUT)


def _frame(message: bytes) -> bytes:
    return str(len(message)).encode() + b" " + message


class FileSink:
    """JSON lines (or CEF / RFC 5424 lines) appended to a file, fsync'd once per page. The file is
    opened for each page, so logrotate may rename it away (no copytruncate needed)."""

    def __init__(self, path: str, render: Render) -> None:
        self.path, self.render = path, render

    def send(self, page: Sequence[items.Item]) -> None:
        data = b"".join(self.render(item) for item in page)
        try:
            with open(self.path, "ab") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            raise errors.TransientError(f"{self.path}: {exc}") from exc

    def close(self) -> None:
        pass


class WebhookSink:
    """A JSON POST per page: `{"sink", "items": [...]}`, signed with HMAC-SHA256 over
    `TIMESTAMP + "." + body` (the timestamp in its own header), so a receiver can refuse both
    forgeries and replays of old deliveries."""

    def __init__(self, spec: specs.SinkSpec) -> None:
        self.spec = spec
        verify: ssl.SSLContext | bool = tls_context(spec) if spec.ca else True
        self.client = httpx.Client(timeout=TIMEOUT, verify=verify, follow_redirects=False)

    def send(self, page: Sequence[items.Item]) -> None:
        body = json.dumps({"sink": self.spec.name, "items": [formats.document(i) for i in page]}).encode()
        try:
            response = self.client.post(self.spec.target, content=body, headers=self.headers(body))
        except httpx.HTTPError as exc:
            raise errors.TransientError(f"webhook {self.spec.name}: {exc}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        if 400 <= status < 500 and status not in (408, 429):
            raise errors.PermanentError(f"webhook {self.spec.name}: {status} {response.text[:200]}")
        raise errors.TransientError(f"webhook {self.spec.name}: {status}")

    def headers(self, body: bytes) -> dict[str, str]:
        found = {"Content-Type": "application/json", "User-Agent": "microseg"}
        if self.spec.secret is not None:
            stamp = str(int(time.time()))
            found[TIMESTAMP] = stamp
            found[SIGNATURE] = "sha256=" + signature(self.spec.secret, stamp, body)
        return found

    def close(self) -> None:
        self.client.close()


def signature(secret: bytes, stamp: str, body: bytes) -> str:
    """The hex HMAC-SHA256 a receiver recomputes to check a delivery."""
    return hmac.new(secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()

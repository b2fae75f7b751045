"""The agent's side of the agent API (docs/api.md, /api/v1/agent): enroll, heartbeat, status, the
ruleset long-poll and flow batches.

Fed by the daemon; feeds the server over HTTP(S). It holds no state besides the credential and the
JSON of the ruleset document it last handed out (the base a delta applies to). Every call raises
`Unreachable` when the server cannot be reached or answers 5xx (worth retrying),
`Throttled` (an `Unreachable`) when it asks to come back later (429, or 503 with `Retry-After`:
the same request, after that long), and `Refused` on another 4xx (not worth retrying as it is).

The ruleset long-poll asks for deltas (docs/ruleset.md, "Deltas") when it holds the JSON of the
document it names as `known`: the delta is applied to that JSON and the result parsed as a document,
whose hash check proves it is exactly the server's. A delta that does not fit (another base,
malformed, a wrong result) is logged, counted (`deltas.refused`) and thrown away, and the whole
document is fetched at once; nothing but a valid document ever leaves `ruleset()`.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from microseg import errors
from microseg.model import ruleset, rulesetdelta

log = logging.getLogger("microseg.agent")
ACCEPT_DELTA = f"{rulesetdelta.MEDIA_TYPE}, application/json"
Document = ruleset.RulesetDocument


class Unreachable(errors.TransientError):
    """The server did not answer, or answered with a server error."""


class Throttled(Unreachable):
    """The server asked for the request again after `retry_after` seconds (429, or 503 with
    Retry-After, e.g. its disk is full)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


RETRY_AFTER_MAX = 3600.0
"""Longest wait a server's Retry-After is believed for (a broken header must not stall an agent)."""


class Refused(errors.PermanentError):
    """The server refused the request (4xx); `status` is the HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class DeltaCounts:
    """How the documents the ruleset long-poll returned arrived."""

    applied: int = 0
    """As deltas that made a valid document."""
    refused: int = 0
    """Deltas thrown away (each followed by a whole fetch)."""
    whole: int = 0
    """As whole documents."""


class Client:
    """One connection pool to one server, authenticated by the agent credential once enrolled."""

    def __init__(self, server: str, credential: str | None = None, verify: bool | str = True) -> None:
        """`verify`: check the server's certificate against the system's CAs (True), or against
        only the CA certificates in the PEM file at that path (a private CA: `--ca-file`)."""
        self.server = server.rstrip("/")
        self.credential = credential
        self._http = httpx.Client(
            base_url=self.server, timeout=httpx.Timeout(10.0), verify=trust_for(self.server, verify)
        )
        self._held: dict[str, Any] | None = None
        """The JSON form of the document last handed out (or made known by `hold`)."""
        self.deltas = DeltaCounts()

    def close(self) -> None:
        self._http.close()

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
        content: bytes | None = None,
        accept: str | None = None,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.credential}"} if self.credential else {}
        if accept is not None:
            headers["Accept"] = accept
        if content is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = self._http.request(
                method,
                path,
                json=body,
                params=params,
                headers=headers,
                content=content,
                timeout=httpx.Timeout(timeout) if timeout else None,
            )
        except httpx.HTTPError as exc:
            raise Unreachable(f"{self.server}: {type(exc).__name__}: {exc}") from exc
        raise_for(response, self.server, path)
        return response

    def enroll(self, token: str, inventory: dict[str, Any]) -> dict[str, Any]:
        """Trade an enrollment token for a credential: {agentId, credential, workload}."""
        found: dict[str, Any] = self._call(
            "POST", "/api/v1/agent/enroll", body={"token": token, "inventory": inventory}
        ).json()
        self.credential = found["credential"]
        return found

    def heartbeat(self, inventory: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/api/v1/agent/heartbeat", body=inventory).json()
        return result

    def status(self, report: dict[str, Any]) -> None:
        self._call("POST", "/api/v1/agent/status", body=report)

    def hold(self, doc: Document | None) -> None:
        """Take `doc` as the document held (e.g. the one saved before a restart), so that the next
        change can come as a delta to it."""
        self._held = doc.to_dict() if doc is not None else None

    def ruleset(self, known: str | None, wait: float) -> Document | None:
        """The workload's document when it differs from `known` (None: unchanged or nothing
        provisioned), waiting up to `wait` seconds for a change. Deltas are asked for when the JSON
        of `known` is held; ValidationError only for a whole document that is not valid."""
        base = self._held if known and self._held is not None and self._held.get("hash") == known else None
        params: dict[str, Any] = {"wait": wait}
        if known:
            params["known"] = known
        response = self._call(
            "GET",
            "/api/v1/agent/ruleset",
            params=params,
            timeout=wait + 15.0,
            accept=ACCEPT_DELTA if base is not None else None,
        )
        if response.status_code in (204, 304):
            return None
        if _is_delta(response):
            if base is None:  # not asked for: cannot be applied to anything we hold
                return self._refused(ValueError("a delta came although none was asked for"))
            try:
                return self.apply_delta(base, _json(response))
            except errors.ValidationError as exc:
                return self._refused(exc)
        return self._whole(response)

    def apply_delta(self, base: dict[str, Any], delta: dict[str, Any]) -> Document:
        """The document `delta` makes of `base` (the JSON of the held document), checked by its
        hash; it becomes the held document. ValidationError when it does not fit; nothing changes then."""
        made = rulesetdelta.apply(base, delta)
        doc = Document.from_dict(made)
        self._held = made
        self.deltas.applied += 1
        return doc

    def _refused(self, exc: Exception) -> Document | None:
        """Throw a delta away and fetch the whole current document (no `known`, no delta)."""
        self.deltas.refused += 1
        log.warning("ruleset delta refused, fetching the whole document: %s", exc)
        return self._whole(self._call("GET", "/api/v1/agent/ruleset", params={"wait": 0}))

    def _whole(self, response: httpx.Response) -> Document | None:
        if response.status_code in (204, 304):
            return None
        if _is_delta(response):
            raise errors.ValidationError("the server sent a delta when the whole document was asked for")
        data = _json(response)
        doc = Document.from_dict(data)
        self._held = data
        self.deltas.whole += 1
        return doc

    def flows(self, batch_json: bytes) -> dict[str, Any]:
        """Upload one batch (already JSON: it comes from the spool as stored)."""
        result: dict[str, Any] = self._call("POST", "/api/v1/agent/flows", content=batch_json).json()
        return result


def trust_for(server: str, verify: bool | str) -> ssl.SSLContext | bool:
    """What httpx checks certificates with. httpx builds a TLS context when the client is made,
    loading the system's CA bundle (about 1 MB); a plain-HTTP server never uses it (relative paths,
    no redirects followed), so it gets a context that trusts no CA and thus fails any handshake."""
    if urlsplit(server).scheme == "http":
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificates and hostnames
    return ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify


def _is_delta(response: httpx.Response) -> bool:
    media: str = response.headers.get("content-type", "")
    return media.split(";", 1)[0].strip().lower() == rulesetdelta.MEDIA_TYPE


def _json(response: httpx.Response) -> dict[str, Any]:
    """The body as a JSON object; ValidationError for anything else."""
    try:
        data = response.json()
    except ValueError as exc:
        raise errors.ValidationError(f"the ruleset answer is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise errors.ValidationError("the ruleset answer is not a JSON object")
    return data


def raise_for(response: httpx.Response, server: str, path: str) -> None:
    """Throttled, Unreachable or Refused for an answer that is not a success (see the docstring)."""
    status = response.status_code
    if status == 429 or (status == 503 and "retry-after" in response.headers):
        wait = _retry_after(response)
        raise Throttled(f"{server}{path}: HTTP {status}, retry in {wait:g}s", wait)
    if status >= 500:
        raise Unreachable(f"{server}{path}: HTTP {status}")
    if status >= 400:
        raise Refused(f"{server}{path}: HTTP {status}: {_detail(response)}", status)


def _retry_after(response: httpx.Response) -> float:
    """Retry-After in seconds (RFC 9110: seconds or an HTTP date; 1 s when missing or unreadable)."""
    text = response.headers.get("retry-after", "").strip()
    try:
        wait = float(text)
    except ValueError:
        try:
            wait = email.utils.parsedate_to_datetime(text).timestamp() - time.time()
        except (TypeError, ValueError):
            wait = 1.0
    return min(max(wait, 0.0), RETRY_AFTER_MAX) if math.isfinite(wait) else 1.0


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail") or response.text[:200])
    except (json.JSONDecodeError, AttributeError):
        return response.text[:200]

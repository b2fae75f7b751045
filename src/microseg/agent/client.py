"""The agent's side of the agent API (docs/api.md, /api/v1/agent): enroll, heartbeat, status, the
ruleset long-poll and flow batches.

Fed by the daemon; feeds the server over HTTP(S). It holds no state besides the credential; every
call raises `Unreachable` when the server cannot be reached or answers 5xx (worth retrying),
`Throttled` (an `Unreachable`) when it asks to come back later (429, or 503 with `Retry-After`:
the same request, after that long), and `Refused` on another 4xx (not worth retrying as it is).
"""

from __future__ import annotations

import email.utils
import json
import math
import ssl
import time
from typing import Any

import httpx

from microseg import errors
from microseg.model import ruleset


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


class Client:
    """One connection pool to one server, authenticated by the agent credential once enrolled."""

    def __init__(self, server: str, credential: str | None = None, verify: bool | str = True) -> None:
        """`verify`: check the server's certificate against the system's CAs (True), or against
        only the CA certificates in the PEM file at that path (a private CA: `--ca-file`)."""
        self.server = server.rstrip("/")
        self.credential = credential
        trust = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        self._http = httpx.Client(base_url=self.server, timeout=httpx.Timeout(10.0), verify=trust)

    def close(self) -> None:
        self._http.close()

    def _call(
        self, method: str, path: str, *, body: Any = None, params: dict[str, Any] | None = None,
        timeout: float | None = None, content: bytes | None = None,
    ) -> httpx.Response:  # fmt: skip
        headers = {"Authorization": f"Bearer {self.credential}"} if self.credential else {}
        if content is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = self._http.request(
                method, path, json=body, params=params, headers=headers, content=content,
                timeout=httpx.Timeout(timeout) if timeout else None,
            )  # fmt: skip
        except httpx.HTTPError as exc:
            raise Unreachable(f"{self.server}: {type(exc).__name__}: {exc}") from exc
        raise_for(response, self.server, path)
        return response

    def enroll(self, token: str, inventory: dict[str, Any]) -> dict[str, Any]:
        """Trade an enrollment token for a credential: {agentId, credential, workload}."""
        found: dict[str, Any] = self._call("POST", "/api/v1/agent/enroll",
                                           body={"token": token, "inventory": inventory}).json()  # fmt: skip
        self.credential = found["credential"]
        return found

    def heartbeat(self, inventory: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/api/v1/agent/heartbeat", body=inventory).json()
        return result

    def status(self, report: dict[str, Any]) -> None:
        self._call("POST", "/api/v1/agent/status", body=report)

    def ruleset(self, known: str | None, wait: float) -> ruleset.RulesetDocument | None:
        """The workload's document when it differs from `known` (None: unchanged or nothing
        provisioned), waiting up to `wait` seconds for a change."""
        params: dict[str, Any] = {"wait": wait}
        if known:
            params["known"] = known
        response = self._call("GET", "/api/v1/agent/ruleset", params=params, timeout=wait + 15.0)
        if response.status_code in (204, 304):
            return None
        return ruleset.RulesetDocument.from_dict(response.json())

    def flows(self, batch_json: bytes) -> dict[str, Any]:
        """Upload one batch (already JSON: it comes from the spool as stored)."""
        result: dict[str, Any] = self._call("POST", "/api/v1/agent/flows", content=batch_json).json()
        return result


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

"""The agent's side of the agent API (docs/api.md, /api/v1/agent): enroll, heartbeat, status, the
ruleset long-poll and flow batches.

Fed by the daemon; feeds the server over HTTP(S). It holds no state besides the credential; every
call raises `Unreachable` when the server cannot be reached or answers 5xx (worth retrying), and
`Refused` on a 4xx (not worth retrying as it is).
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from microseg import errors
from microseg.model import ruleset


class Unreachable(errors.TransientError):
    """The server did not answer, or answered with a server error."""


class Refused(errors.PermanentError):
    """The server refused the request (4xx); `status` is the HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Client:
    """One connection pool to one server, authenticated by the agent credential once enrolled."""

    def __init__(self, server: str, credential: str | None = None, verify: bool | str = True) -> None:
        self.server = server.rstrip("/")
        self.credential = credential
        self._http = httpx.Client(base_url=self.server, timeout=httpx.Timeout(10.0), verify=verify)

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
        if response.status_code >= 500:
            raise Unreachable(f"{self.server}{path}: HTTP {response.status_code}")
        if response.status_code >= 400:
            raise Refused(f"{self.server}{path}: HTTP {response.status_code}: {_detail(response)}",
                          response.status_code)  # fmt: skip
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


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail") or response.text[:200])
    except (json.JSONDecodeError, AttributeError):
        return response.text[:200]

"""The lab's calls to its control plane, over the public REST API (docs/api.md) like any client.

Fed by the runner once the server answers /healthz; feeds the server the lab's inventory and
policy (`POST /apply`), a provisioned version (`POST /versions`) and one enrollment token per host
(`POST /enrollment-tokens` with the host's labels and the lab's mode, bound to the host's
workload), and reads back whether the agents are in sync (`GET /agents`). A problem+json answer becomes
an error carrying the server's detail and every problem it lists.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from microseg import errors


class ControlPlane:
    """An admin's connection to the lab's server."""

    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def wait_ready(self, running: Callable[[], bool], timeout: float, log: str) -> None:
        """Until /healthz answers; an error when the server exits or does not answer in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not running():
                raise errors.PermanentError(f"the lab's server exited at start (see {log})")
            try:
                if self.http.get("/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise errors.TransientError(f"the lab's server did not answer within {timeout:g} s (see {log})")

    def call(self, method: str, path: str, body: Any = None, accept: tuple[int, ...] = ()) -> Any:
        """The decoded answer of a 2xx response (or of a status in `accept`)."""
        try:
            response = self.http.request(method, f"/api/v1{path}", json=body)
        except httpx.HTTPError as exc:
            raise errors.TransientError(f"the lab's server at {self.url}: {exc}") from exc
        if response.is_success or response.status_code in accept:
            return response.json() if response.content else None
        raise errors.UserError(_problem_text(method, path, response))

    def apply(self, documents: list[dict[str, Any]]) -> dict[str, Any]:
        """Create or replace objects, all or none."""
        result: dict[str, Any] = self.call("POST", "/apply", {"documents": documents})
        return result

    def provision(self, note: str) -> dict[str, Any] | None:
        """Provision the draft; None when nothing changed (409)."""
        result = self.call("POST", "/versions", {"note": note}, accept=(409,))
        return None if result is None or result.get("status") == 409 else dict(result)

    def enrollment_token(self, name: str, labels: dict[str, str], mode: str, workload: str) -> str:
        """A one-time enrollment token bound to the declared `workload` (its agent adopts it; an
        unbound token is refused a workload that exists) and giving it these labels and mode."""
        body = {"name": name, "labels": labels, "mode": mode, "workloads": [workload]}
        created = self.call("POST", "/enrollment-tokens", body)
        return str(created["token"])

    def agent_states(self) -> dict[str, str]:
        """Each enrolled agent's state (`in sync`, `stale`, `failed`, ...) by workload."""
        listed = self.call("GET", "/agents")
        return {a["workload"]: a["state"] for a in listed["items"] if not a.get("revoked")}


def _problem_text(method: str, path: str, response: httpx.Response) -> str:
    """`POST /api/v1/apply: 422 Unprocessable: detail` plus one line per listed problem."""
    try:
        problem = response.json()
    except ValueError:
        problem = {}
    head = f"{method} /api/v1{path}: {response.status_code} {problem.get('title', response.reason_phrase)}"
    lines = [f"{head}: {problem['detail']}" if problem.get("detail") else head]
    for p in problem.get("problems") or []:
        lines.append(f"  {p.get('object', '')} {p.get('field', '')}: {p.get('message', '')}".rstrip())
    return "\n".join(lines)

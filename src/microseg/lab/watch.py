"""What the demo sees of a running lab: the control plane's answers, and real connections.

Fed by a lab that is up (its state: hosts, server, admin token); feeds the story's steps. Reads go
through the public REST API (docs/api.md) with the lab's admin token, except the signed webhook,
which is called without any token as an EDR tool would. Connections are made from inside a host's
namespace (`state.LabState.reach`). Every wait polls with a short interval up to a deadline, so
the demo moves on as soon as what it waits for happens; nothing here sleeps a fixed long time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from microseg import errors
from microseg.lab import control, state

T = TypeVar("T")
BLOCKED = ("timeout", "eperm")
"""How a dropped connection attempt ends: no answer, or refused by the sender's own output chain."""


def wait(what: str, found: Callable[[], T | None], timeout: float, every: float = 0.2) -> T:
    """`found()` once it is truthy; a TransientError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = found()
        if value:
            return value
        if time.monotonic() > deadline:
            raise errors.TransientError(f"{what}: not within {timeout:g} s")
        time.sleep(every)


class LabWatch:
    """The demo's hands and eyes in one lab."""

    def __init__(self, lab: state.LabState) -> None:
        self.lab = lab
        self.plane = control.ControlPlane(lab.server, lab.token)

    def close(self) -> None:
        """Close the connections to the control plane."""
        self.plane.close()

    # --- the API ----------------------------------------------------------------------------------

    def get(self, path: str, **params: Any) -> Any:
        """A JSON GET with query parameters (None ones left out)."""
        return self.plane.call("GET", _with_query(path, params))

    def send(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        """A JSON call with a body."""
        return self.plane.call(method, _with_query(path, params), body)

    def text(self, path: str, **params: Any) -> str:
        """A plain-text answer (DOT, tables)."""
        response = self.plane.http.get(
            f"/api/v1{path}", params={k: v for k, v in params.items() if v is not None}
        )
        if not response.is_success:
            raise errors.UserError(f"GET /api/v1{path}: {response.status_code} {response.text[:500]}")
        return response.text

    def flows(self, workload: str, since: float, **match: Any) -> list[dict[str, Any]]:
        """Flow records reported by `workload` since `since` whose fields equal `match`."""
        items = self.get("/flows", workload=workload, since=since, limit=1000)["items"]
        return [f for f in items if all(f.get(k) == v for k, v in match.items())]

    def events(self, kind: str, workload: str, since: float) -> list[dict[str, Any]]:
        """Events of a kind about a workload since `since`."""
        items = self.get("/events", kind=kind, workload=workload, limit=1000)["items"]
        return [e for e in items if float(e.get("at", 0)) >= since]

    def agents(self) -> dict[str, dict[str, Any]]:
        """The agents by workload."""
        return {a["workload"]: a for a in self.get("/agents")["items"] if not a.get("revoked")}

    def all_in_sync(self) -> bool:
        """Every host's agent online and enforcing the ruleset the server expects."""
        found = self.agents()
        return len(found) == len(self.lab.hosts) and all(
            a["online"] and a["appliedHash"] == a["expectedHash"] for a in found.values()
        )

    def wait_in_sync(self, timeout: float = 30.0) -> None:
        """Until every agent applied what the server expects."""
        wait("every agent in sync", self.all_in_sync, timeout, every=0.2)

    def explain(self, src: str, dst: str, port: int) -> dict[str, Any]:
        """The active version's explained verdict for one flow."""
        answer: dict[str, Any] = self.send(
            "POST", "/explain", {"from": src, "to": dst, "port": f"{port}/tcp"}
        )
        return dict(answer["verdict"])

    def hook(self, name: str, secret: str, body: dict[str, Any]) -> dict[str, Any]:
        """A signed quarantine webhook call, with no API token (what an EDR tool sends)."""
        raw = json.dumps(body).encode()
        stamp = f"{time.time():.0f}"
        signature = hmac.new(secret.encode(), stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "X-Microseg-Hook": name,
            "X-Microseg-Timestamp": stamp,
            "X-Microseg-Signature": f"sha256={signature}",
        }
        response = httpx.post(
            f"{self.lab.server}/api/v1/hooks/quarantine", content=raw, headers=headers, timeout=30
        )
        if not response.is_success:
            raise errors.UserError(f"the webhook was refused: {response.status_code} {response.text[:500]}")
        answer: dict[str, Any] = response.json()
        return answer

    # --- the hosts --------------------------------------------------------------------------------

    def ip(self, host: str) -> str:
        """A host's address."""
        return self.lab.host(host).ip

    def reach(self, src: str, dst: str, port: int, timeout: float = 1.0) -> str:
        """One connection attempt: open, refused, timeout, eperm, no-echo."""
        return self.lab.reach(src, dst, port, timeout=timeout)

    def talk(self, src: str, dst: str, port: int, payload: bytes) -> int:
        """Connect from `src`, send `payload`, and return how many bytes came back (the lab's services
        echo); an OSError when the connection cannot be made."""
        with self.lab.connect(src, dst, port, timeout=2.0) as sock:
            sock.sendall(payload)
            back = b""
            while len(back) < len(payload):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                back += chunk
            return len(back)

    def nft(self, host: str, *args: str) -> str:
        """`nft ARGS` inside one host's namespace only (never the machine's own firewall)."""
        command = ["nsenter", f"--net=/run/netns/{self.lab.host(host).netns}", "nft", *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=True)
        return done.stdout


def _with_query(path: str, params: dict[str, Any]) -> str:
    given = {k: v for k, v in params.items() if v is not None}
    return f"{path}?{urllib.parse.urlencode(given)}" if given else path

"""The CLI's connection to a control plane: where it is, which token, and errors in plain words.

The server and token come from `--server` / `--token`, else MICROSEG_SERVER / MICROSEG_TOKEN, else
the config file (`~/.config/microseg/config.yaml`, or MICROSEG_CONFIG) that `microseg login`
writes. A problem+json answer becomes a UserError (exit 2) carrying the server's detail and every
listed problem; a server that cannot be reached is a TransientError (exit 1).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import yaml

from microseg import errors
from microseg.policyfile import origins

DEFAULT_CONFIG = "~/.config/microseg/config.yaml"


def config_path(given: str | None = None) -> Path:
    """Where the config file is."""
    return Path(given or os.environ.get("MICROSEG_CONFIG") or DEFAULT_CONFIG).expanduser()


@dataclass(frozen=True)
class Target:
    """Server and token as given on the command line (None: look further)."""

    server: str | None = None
    token: str | None = None
    config: str | None = None

    def resolved(self) -> tuple[str, str]:
        """(server URL, token), or a UserError saying how to give them."""
        saved = read_config(config_path(self.config))
        server = self.server or os.environ.get("MICROSEG_SERVER") or saved.get("server")
        token = self.token or os.environ.get("MICROSEG_TOKEN") or saved.get("token")
        if not server or not token:
            raise errors.UserError(
                "no server configured: pass --server URL --token TOKEN, set MICROSEG_SERVER and "
                "MICROSEG_TOKEN, or run `microseg login --server URL --token TOKEN`"
            )
        return str(server).rstrip("/"), str(token)


def read_config(path: Path) -> dict[str, Any]:
    """The config file's settings (empty when there is none)."""
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise errors.UserError(f"{path}: expected a mapping with server and token")
    return data


def write_config(path: Path, server: str, token: str) -> None:
    """Save server and token, readable by the owner only (the token is a secret)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        yaml.safe_dump({"server": server, "token": token}, out)


class Client:
    """JSON over HTTP to /api/v1 with the token; raises microseg errors instead of returning them."""

    def __init__(self, target: Target, timeout: float = 60.0) -> None:
        server, token = target.resolved()
        self.http = httpx.Client(
            base_url=server, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )

    def call(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        """The decoded answer of a 2xx response."""
        response = self._send(method, path, json, params)
        return response.json() if response.content else None

    def text(self, path: str, **params: Any) -> str:
        """A GET whose answer is text (Graphviz DOT, Markdown)."""
        return self._send("GET", path, None, params).text

    def _send(self, method: str, path: str, json: Any, params: dict[str, Any] | None) -> httpx.Response:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self.http.request(method, "/api/v1" + path, json=json, params=query)
        except httpx.HTTPError as exc:
            raise errors.TransientError(
                f"cannot reach the control plane at {self.http.base_url}: {exc}"
            ) from exc
        if response.status_code >= 400:
            raise _error(response)
        return response

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def get(self, path: str, **params: Any) -> Any:
        """GET."""
        return self.call("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        """POST."""
        return self.call("POST", path, json=body if body is not None else {})


def item_path(collection: str, name: str, *rest: str) -> str:
    """`/collection/name[/rest...]` with the name as one encoded path segment (`%2F`, `%3F`, ...),
    so that no name can reach another URL; a rule's `tier/name` is two segments, as the API has it."""
    parts = name.split("/", 1) if collection == "rules" else [name]
    return "/".join(["", collection, *(quote(p, safe="") for p in parts), *rest])


class ApiError(errors.UserError):
    """A 4xx answer; `problems` are the objects it names (`object` `Kind/name`, `field`, `message`),
    so that a command that sent files can say which file and line each came from."""

    def __init__(self, text: str, status: int, problems: list[dict[str, Any]]) -> None:
        super().__init__(text)
        self.status = status
        self.problems = problems


def _error(response: httpx.Response) -> errors.MicrosegError:
    try:
        body = response.json()
    except ValueError:
        body = {"title": response.reason_phrase, "detail": response.text[:500]}
    if not isinstance(body, dict):
        body = {"title": response.reason_phrase, "detail": str(body)[:500]}
    found = [p for p in body.get("problems", []) if isinstance(p, dict)]
    lines = [f"{response.status_code} {body.get('title', '')}: {body.get('detail', '')}".rstrip(": ")]
    lines += [problem_line(p) for p in found]
    lines += [f"  {p.get('field', '')}: {p.get('message', '')}" for p in body.get("errors", [])]
    lines += [
        f"  invariant {v.get('invariant')}: {', '.join(v.get('sources', [])[:3])} -> "
        f"{', '.join(v.get('destinations', [])[:3])} on {v.get('port')} allowed by {v.get('rule')}"
        for v in body.get("violations", [])
    ]
    text = "\n".join(lines)
    if response.status_code >= 500:
        return errors.PermanentError(text)
    return ApiError(text, response.status_code, found)


def problem_line(problem: dict[str, Any], where: str = "") -> str:
    """One problem of an answer as a line: `  [file:line: ]Kind/name: field: message`."""
    prefix = f"{where}: " if where else ""
    return f"  {prefix}{problem.get('object', '')}: {problem.get('field', '')}: {problem.get('message', '')}"


def located(exc: ApiError, files: Sequence[str | Path]) -> ApiError:
    """The same error with `file:line` before each problem whose object came from `files` (what
    `apply -f` sent); objects the files do not hold (already on the server) stay as they are."""
    where = origins.Origins.read(files)
    places = [where.where(str(p.get("object", "")), str(p.get("field", ""))) for p in exc.problems]
    text = str(exc).splitlines()
    lines = [problem_line(p, place or "") for p, place in zip(exc.problems, places, strict=True)]
    found = [{**p, "where": place} if place else p for p, place in zip(exc.problems, places, strict=True)]
    return ApiError("\n".join([*text[:1], *lines, *text[1 + len(lines) :]]), exc.status, found)

"""The web console: static files at `/` and `/console/...`, and `GET /api/v1/whoami`.

The console is plain HTML, CSS and JavaScript modules shipped in `microseg.server.console`
(cytoscape.js vendored beside them, so nothing is fetched from elsewhere at run time). It talks
to the same REST API as every other client, with the token the user logs in with; `whoami` tells
it that token's role so it shows only what the role may do. The server enforces the roles
whatever the console shows: this module grants nothing.

Only files that ship in the package are served, each with a fixed content type and a strict
Content-Security-Policy (no inline script or style, no other origin), so an injected string can
never run as code.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from microseg.server import auth
from microseg.server.auth import Principal
from microseg.server.problems import Problem

CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # The files change only with a new release; revalidating keeps an upgrade from mixing versions.
    "Cache-Control": "no-cache",
}

Viewer = Annotated[Principal, Depends(auth.viewer)]
router = APIRouter(prefix="/api/v1", tags=["console"])
pages = APIRouter(include_in_schema=False)


@router.get("/whoami", summary="The calling token's name and role (what the console may show)")
def whoami(who: Viewer) -> dict[str, str]:
    return {"kind": who.kind, "id": who.id, "name": who.name, "role": who.role, "owner": who.owner}


@functools.cache
def static_files() -> dict[str, tuple[bytes, str]]:
    """Every servable file by its path under `static/`, with its content type."""
    found: dict[str, tuple[bytes, str]] = {}
    pending = [("", resources.files("microseg.server.console") / "static")]
    while pending:
        prefix, folder = pending.pop()
        for entry in folder.iterdir():
            name = prefix + entry.name
            if entry.is_dir():
                pending.append((name + "/", entry))
                continue
            suffix = "." + name.rsplit(".", 1)[-1] if "." in entry.name else ""
            if suffix in MEDIA_TYPES:
                found[name] = (entry.read_bytes(), MEDIA_TYPES[suffix])
    return found


def _file(name: str) -> Response:
    found = static_files().get(name)
    if found is None:
        raise Problem(404, "Not found", f"the console has no file {name!r}")
    body, media_type = found
    return Response(body, media_type=media_type, headers=HEADERS)


@pages.get("/")
def index() -> Response:
    return _file("index.html")


@pages.get("/console/{name:path}")
def asset(name: str) -> Response:
    return _file(name)

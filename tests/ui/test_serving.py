"""How `microseg server` serves the console, without a browser: the files at `/` and
`/console/...` with their content types and a strict Content-Security-Policy, nothing else from
the package, cytoscape vendored with its licence, no markup built from strings in the JavaScript,
and `GET /api/v1/whoami` telling a token its role. The API's own paths are untouched."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from microseg.server import routes_console
from tests.server.conftest import Api, ok, problem
from tests.server.test_flow_summary import enroll

pytestmark = pytest.mark.ui
STATIC = Path(routes_console.__file__).parent / "console" / "static"


def test_the_page_and_its_files_are_served_with_types_and_a_strict_policy(api: Api) -> None:
    page = api.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    linked = re.findall(r'(?:src|href)="(/console/[^"]+)"', page.text)
    assert "/console/app.js" in linked and "/console/vendor/cytoscape.min.js" in linked
    for path in linked:
        found = api.client.get(path)
        assert found.status_code == 200, path
        assert found.headers["content-security-policy"] == csp
    assert api.client.get("/console/app.js").headers["content-type"] == "text/javascript; charset=utf-8"
    assert api.client.get("/console/app.css").headers["content-type"] == "text/css; charset=utf-8"


@pytest.mark.parametrize("path", ["/console/nothing.js", "/console/../__init__.py", "/console/%2e%2e/__init__.py",
                                  "/console/vendor/LICENSE", "/console/"])  # fmt: skip
def test_only_the_console_files_are_served(api: Api, path: str) -> None:
    problem(api.client.get(path), 404)


def test_the_api_and_its_documents_are_untouched(api: Api) -> None:
    assert ok(api.client.get("/healthz")) == {"status": "ok"}
    spec = ok(api.client.get("/openapi.json"))
    assert "/api/v1/whoami" in spec["paths"] and "/" not in spec["paths"]
    assert api.client.get("/docs").status_code == 404  # its CDN scripts have no place on this origin
    assert problem(api.as_("none").get("/workloads"), 401)


def test_whoami_tells_a_token_its_role(api: Api) -> None:
    for role in ("viewer", "editor", "admin"):
        me = ok(api.as_(role).get("/whoami"))
        assert (me["role"], me["name"], me["kind"]) == (role, f"test-{role}", "token")
        assert me["owner"] == f"test-{role}"  # test tokens are owned by their names (the CLI default)
    problem(api.as_("none").get("/whoami"), 401)
    problem(api.as_("msk_unknown").get("/whoami"), 401)
    problem(enroll(api, "h-1", "10.9.0.1", {}).get("/whoami"), 403)  # agents use the agent API only


def test_cytoscape_is_vendored_with_its_licence() -> None:
    licence = (STATIC / "vendor" / "LICENSE").read_text()
    assert "Cytoscape Consortium" in licence and "Permission is hereby granted" in licence
    assert (STATIC / "vendor" / "cytoscape.min.js").read_text().startswith("/**\n * Copyright (c) 2016")


def test_the_javascript_never_builds_markup_from_strings() -> None:
    """Text reaches the DOM as text nodes only (dom.js); no inline handlers or styles either."""
    for source in STATIC.glob("*.js"):
        code = source.read_text()
        for risky in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                      'setAttribute("style"'):  # fmt: skip
            assert risky not in code, (source.name, risky)
    html = (STATIC / "index.html").read_text()
    assert (
        not re.search(r"<script(?![^>]*\bsrc=)", html)
        and " style=" not in html
        and " on" + "click" not in html
    )

"""The console under test: a real server (the API tests' `api` fixture, on SQLite) seeded with
demo data, driven by Debian's Chromium through Playwright. No browser is downloaded: without
/usr/bin/chromium or the playwright package these tests skip, and under CI=true they fail.

Every page records browser console errors and uncaught page errors; a test fails when any
appeared that it did not expect. Screenshots go to tests/ui/artifacts/ (kept by CI).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from microseg.store import database, summaries
from tests.conftest import require
from tests.server.conftest import Api, ok
from tests.server.conftest import api as api  # noqa: PLC0414 - re-exported fixtures
from tests.server.conftest import settings as settings  # noqa: PLC0414
from tests.server.estates import example
from tests.server.test_flow_summary import enroll, flow, send

try:
    from playwright import sync_api
except ImportError:  # the dev extra was not installed; the tests say so
    sync_api = None  # type: ignore[assignment]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
VIEWPORT = {"width": 1280, "height": 800}
AT = summaries.bucket_of(time.time()) - 3600
WEB, APP, DB = "10.77.1.11", "10.77.1.21", "10.77.1.31"
DEV_WEB, DEV_DB = "10.77.2.11", "10.77.2.31"


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """SQLite only: the console talks to the same API whatever the backend (the API suite runs both)."""
    yield database.sqlite_url(tmp_path / "data")


@pytest.fixture
def demo(api: Api) -> Api:
    """The example estate provisioned as version 1, with agents on prod-db-1 and dev-db-1 that
    reported app -> db allowed, web -> db blocked, dev web -> dev db ssh would-block (alert mode),
    and a tampering incident on prod-db-1."""
    ok(api.post("/apply", {"documents": example()}))
    ok(api.post("/versions", {"note": "initial policy"}), 201)
    db = enroll(api, "prod-db-1", DB, {})
    assert send(db, "p-1", flow(APP, DB, 3306, AT, process="mysqld", rule="application/prod-app-to-db"),
                flow(WEB, DB, 3306, AT, verdict="blocked", rule="default", connections=4))  # fmt: skip
    dev = enroll(api, "dev-db-1", DEV_DB, {})
    assert send(
        dev, "d-1", flow(DEV_WEB, DEV_DB, 22, AT, process="sshd", verdict="would-block", rule="default")
    )
    tamper = {"at": time.time(), "summary": "table inet microseg changed", "changes": ["- rule accept"],
              "restoredIn": 0.4}  # fmt: skip
    ok(db.post("/agent/status", {"tampered": True, "tamper": [tamper]}))
    return api


@dataclass
class Console:
    """A browser page on the console, with the errors it logged."""

    page: Any
    base: str
    errors: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)
    """Substrings of errors this test provokes on purpose (a refused token)."""

    def login(self, token: str) -> None:
        """Log in through the form, as a person would (type, Enter)."""
        self.page.goto(self.base + "/")
        self.page.fill("#token", token)
        self.page.press("#token", "Enter")
        self.page.wait_for_selector("#nav a", state="visible")

    def open(self, hash_: str) -> None:
        """Go to a view by its URL fragment and wait until it has drawn its heading."""
        self.page.goto(f"{self.base}/#/{hash_}")
        self.page.wait_for_selector(".view-title")

    def shot(self, name: str) -> Path:
        """A full-page screenshot kept as a test artefact."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(x in e for x in self.expected)]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless (never a downloaded browser)."""
    require(sync_api is not None, "playwright is not installed (pip install -e '.[dev]')")
    require(CHROMIUM.exists(), f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        found = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield found
        found.close()


@pytest.fixture
def console(browser: Any, demo: Api) -> Iterator[Console]:
    """A fresh browser context at 1280x800 on the demo server; fails on console or page errors."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(10_000)
    page = context.new_page()
    found = Console(page, str(demo.client.base_url).rstrip("/"))
    page.on("console", lambda m: found.errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: found.errors.append(f"page error: {e}"))
    yield found
    context.close()
    assert found.unexpected() == [], "the browser logged errors"


def expect(locator: Any) -> Any:
    """Playwright's auto-waiting assertions (imported lazily: the package may be missing)."""
    return sync_api.expect(locator)

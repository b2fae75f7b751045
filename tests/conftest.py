"""Shared fixtures and CI's rules. Tests that need root, nftables, PostgreSQL or Chromium skip with a
reason on a machine without them; under CI (CI=true, CI=1, ...) every skip outside `CI_MAY_SKIP`
fails the run, whether it came from `require`, a direct `pytest.skip` or a skip marker: CI must prove
them. Root-requiring tests carry the `netns` or `lab` marker (`require_root` checks), and golden
files cannot be rewritten under CI."""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

# Skips that are fine under CI, by test node id (without parameters), each with why.
CI_MAY_SKIP: dict[str, str] = {
    "tests/k8s/test_conformance.py::test_the_vendored_copy_is_the_shared_data_unchanged": (
        "CI's clean clone may have no shared folder beside it; the vendored copy is then what is tested"
    ),
}

ROOT_MARKERS = ("netns", "lab")

_current: list[pytest.Item] = []


def under_ci() -> bool:
    """Whether this run is CI's: CI set to any common spelling of true."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes", "on"}


def require(condition: bool, reason: str) -> None:
    """Skip with `reason` unless under CI, where a missing capability fails the test."""
    if condition:
        return
    if under_ci():
        pytest.fail(f"CI must run this test but cannot: {reason}")
    pytest.skip(reason)


def require_root(reason: str) -> None:
    """Like `require(geteuid() == 0)`, and the calling test must say so with a root marker, so
    `-m "not netns and not lab"` selects exactly what runs without root."""
    item = _current[-1] if _current else None
    if item is not None and not any(item.get_closest_marker(m) for m in ROOT_MARKERS):
        pytest.fail(f"{item.nodeid} needs root but carries none of the markers {ROOT_MARKERS}")
    require(os.geteuid() == 0, reason)


def pytest_addoption(parser: pytest.Parser) -> None:
    """`--update-golden` rewrites tests/golden/* from the current renderers instead of comparing."""
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/* from the current renderers instead of comparing",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Golden files change only by hand, never in CI, where a rewrite would make every comparison pass."""
    rewriting = config.getoption("--update-golden", default=False) or os.environ.get("MICROSEG_UPDATE_GOLDEN")
    if under_ci() and rewriting:
        raise pytest.UsageError(
            "golden files cannot be rewritten under CI (--update-golden / MICROSEG_UPDATE_GOLDEN)"
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    _current.append(item)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    yield
    if _current and _current[-1] is item:
        _current.pop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    """Under CI a skip is a failure unless allowlisted: nothing proves a test that did not run."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not (report.skipped and under_ci()) or hasattr(report, "wasxfail"):
        return
    if item.nodeid.split("[", 1)[0] in CI_MAY_SKIP:
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped under CI, which must run it ({reason}); allowlist it in CI_MAY_SKIP with why"

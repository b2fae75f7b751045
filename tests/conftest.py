"""Shared fixtures. Tests that need root or nftables skip with a reason, except under CI=true,
where such a skip is a failure: CI must prove them."""

from __future__ import annotations

import os

import pytest


def require(condition: bool, reason: str) -> None:
    """Skip with `reason` unless CI=true, where a missing capability fails the test."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run this test but cannot: {reason}")
    pytest.skip(reason)


def pytest_addoption(parser: pytest.Parser) -> None:
    """`--update-golden` rewrites tests/golden/* from the current renderers instead of comparing."""
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/* from the current renderers instead of comparing",
    )

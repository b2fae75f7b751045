"""Fixtures of the render tests. `--update-golden` (declared in tests/conftest.py) or
MICROSEG_UPDATE_GOLDEN=1 is the only way golden files change."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.conftest import require, require_root
from tests.render import netns


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    """Whether this run rewrites golden files."""
    flag = bool(request.config.getoption("--update-golden", default=False))
    return flag or os.environ.get("MICROSEG_UPDATE_GOLDEN") == "1"


def require_root_tools(*tools: str) -> None:
    """Skip (fail under CI=true) unless we are root and the tools exist."""
    require_root("needs root (CAP_NET_ADMIN) for nftables")
    for tool in tools:
        require(shutil.which(tool) is not None, f"needs {tool}")


@pytest.fixture
def nft_check() -> None:
    """`nft -c` (a dry run that changes nothing) is available."""
    require_root_tools("nft", "unshare")


@pytest.fixture
def lab() -> Iterator[netns.Lab]:
    """Two ms- namespaces joined by a veth pair, removed afterwards whatever happens."""
    require_root_tools("nft", "ip", "nsenter", "ipset", "iptables-restore", "ip6tables-restore")
    with netns.lab() as the_lab:
        yield the_lab

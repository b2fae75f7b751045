"""docs/architecture.md is the map of the code: every package under src/microseg/ is named in it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = sorted(
    p.name for p in (ROOT / "src" / "microseg").iterdir() if p.is_dir() and not p.name.startswith("__")
)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_is_on_the_map(package: str) -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    assert f"`{package}/`" in text, f"docs/architecture.md does not name src/microseg/{package}/"


def test_the_map_names_no_package_that_is_gone() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"^\| `([a-z0-9_]+)/`", text, flags=re.M))
    assert named <= set(PACKAGES), named - set(PACKAGES)

"""Tiers: name rules (they become chain names) and the built-in evaluation order."""

from __future__ import annotations

import pytest

from microseg.errors import ValidationError
from microseg.model import tiers

VALID = {"one-char": "a", "dashes": "app-team-2", "32-chars": "a" * 32, "digits": "1"}
INVALID = {
    "empty": "",
    "33-chars": "a" * 33,
    "upper-case": "Security",
    "underscore": "app_team",
    "dot": "app.team",
    "starts-with-dash": "-app",
    "ends-with-dash": "app-",
    "reserved-default": "default",
    "trailing-newline": "app\n",
}


@pytest.mark.parametrize("name", VALID.values(), ids=VALID.keys())
def test_valid_names(name: str) -> None:
    assert tiers.Tier(1, name).name == name


@pytest.mark.parametrize("name", INVALID.values(), ids=INVALID.keys())
def test_invalid_names(name: str) -> None:
    with pytest.raises(ValidationError, match="tier name") as info:
        tiers.Tier(1, name)
    assert info.value.field == "name"


def test_builtin_tiers_in_evaluation_order() -> None:
    assert [t.name for t in tiers.BUILTIN_TIERS] == [tiers.QUARANTINE, tiers.SECURITY, tiers.APPLICATION]
    assert [t.name for t in sorted(reversed(tiers.BUILTIN_TIERS))] == [
        "quarantine",
        "security",
        "application",
    ]
    assert all(t.description for t in tiers.BUILTIN_TIERS)


def test_default_is_not_a_builtin_tier() -> None:
    assert tiers.DEFAULT not in {t.name for t in tiers.BUILTIN_TIERS}


def test_tiers_order_by_order_then_name() -> None:
    custom = [
        tiers.Tier(250, "platform"),
        tiers.Tier(200, "zeta"),
        *tiers.BUILTIN_TIERS,
        tiers.Tier(200, "alpha"),
    ]
    assert [t.name for t in sorted(custom)] == [
        "quarantine",
        "alpha",
        "security",
        "zeta",
        "platform",
        "application",
    ]

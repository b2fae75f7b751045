"""Rules: validation, time windows [notBefore, notAfter), refs, epoch seconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microseg.errors import ValidationError
from microseg.model import rules, selectors, services

ANY = (selectors.AnyPeer(),)
WEB = (selectors.SelectorPeer(selectors.LabelSelector.parse("app=web")),)
START = datetime(2026, 1, 1, tzinfo=UTC)
END = datetime(2026, 2, 1, tzinfo=UTC)


def rule(**overrides: Any) -> rules.Rule:
    fields: dict[str, Any] = {
        "name": "allow-web",
        "tier": "application",
        "priority": 100,
        "action": rules.Action.ALLOW,
        "sources": ANY,
        "destinations": WEB,
        "services": (services.ANY_SERVICE,),
    }
    return rules.Rule(**{**fields, **overrides})


VALID_NAMES = {"one-char": "a", "dashes-dots-underscores": "a-b.c_d", "digits": "0day", "64-chars": "a" * 64}
INVALID_NAMES = {
    "empty": "",
    "upper-case": "Allow-web",
    "65-chars": "a" * 65,
    "starts-with-dash": "-web",
    "ends-with-dot": "web.",
    "space": "allow web",
    "slash": "app/web",
    "trailing-newline": "web\n",
}


@pytest.mark.parametrize("name", VALID_NAMES.values(), ids=VALID_NAMES.keys())
def test_valid_names(name: str) -> None:
    assert rule(name=name).ref == f"application/{name}"


@pytest.mark.parametrize("name", INVALID_NAMES.values(), ids=INVALID_NAMES.keys())
def test_invalid_names(name: str) -> None:
    with pytest.raises(ValidationError, match="rule name") as info:
        rule(name=name)
    assert info.value.field == "name"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"sources": ()}, "from"),
        ({"destinations": ()}, "to"),
        ({"services": ()}, "services"),
        ({"not_before": datetime(2026, 1, 1)}, "notBefore"),  # naive on purpose
        ({"not_after": datetime(2026, 1, 1)}, "notAfter"),
        ({"not_before": END, "not_after": START}, "notAfter"),
        ({"not_before": START, "not_after": START}, "notAfter"),
        ({"not_before": START, "not_after": START.astimezone(timezone(timedelta(hours=2)))}, "notAfter"),
    ],
    ids=[
        "empty-from",
        "empty-to",
        "empty-services",
        "naive-not-before",
        "naive-not-after",
        "window-reversed",
        "window-empty",
        "same-instant-other-zone",
    ],
)
def test_invalid_rules(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        rule(**overrides)
    assert info.value.field == field


def test_open_ended_windows_are_valid() -> None:
    assert rule(not_before=START).not_after is None
    assert rule(not_after=END).not_before is None


WINDOW_TABLE = {
    "before-start": (START - timedelta(microseconds=1), False),
    "at-start": (START, True),
    "inside": (START + timedelta(days=3), True),
    "just-before-end": (END - timedelta(microseconds=1), True),
    "at-end": (END, False),
    "after-end": (END + timedelta(seconds=1), False),
    "at-start-other-zone": (START.astimezone(timezone(timedelta(hours=-5))), True),
    "at-end-other-zone": (END.astimezone(timezone(timedelta(hours=9))), False),
}


@pytest.mark.parametrize(("moment", "expected"), WINDOW_TABLE.values(), ids=WINDOW_TABLE.keys())
def test_active_at_window_edges(moment: datetime, expected: bool) -> None:
    assert rule(not_before=START, not_after=END).active_at(moment) is expected


@pytest.mark.parametrize(
    ("overrides", "moment", "expected"),
    [
        ({}, START, True),
        ({"not_before": START}, START - timedelta(seconds=1), False),
        ({"not_before": START}, END + timedelta(days=10_000), True),
        ({"not_after": END}, datetime(1970, 1, 1, tzinfo=UTC), True),
        ({"not_after": END}, END, False),
        ({"enabled": False}, START, False),
        ({"enabled": False, "not_before": START, "not_after": END}, START, False),
    ],
    ids=[
        "no-window",
        "before-open-start",
        "long-after-open-start",
        "long-before-open-end",
        "at-open-end",
        "disabled",
        "disabled-inside-window",
    ],
)
def test_active_at(overrides: dict[str, Any], moment: datetime, expected: bool) -> None:
    assert rule(**overrides).active_at(moment) is expected


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (None, None),
        (datetime(1970, 1, 1, tzinfo=UTC), 0),
        (START, 1767225600),
        (datetime(2026, 1, 1, 2, 0, tzinfo=timezone(timedelta(hours=2))), 1767225600),
        (START + timedelta(seconds=1, microseconds=999_999), 1767225601),
    ],
    ids=["none", "epoch-zero", "utc", "other-zone-same-instant", "fraction-dropped"],
)
def test_epoch(moment: datetime | None, expected: int | None) -> None:
    assert rules.epoch(moment) == expected


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.timezones()))
def test_epoch_is_the_utc_second(moment: datetime) -> None:
    seconds = rules.epoch(moment)
    assert seconds is not None
    assert datetime.fromtimestamp(seconds, UTC) <= moment < datetime.fromtimestamp(seconds + 1, UTC)


@pytest.mark.parametrize(
    ("sources", "destinations", "any_source", "any_destination"),
    [
        (ANY, WEB, True, False),
        (WEB, ANY, False, True),
        (WEB, WEB, False, False),
        ((*WEB, *ANY), ANY, True, True),
    ],
    ids=["from-any", "to-any", "neither", "any-among-others"],
)
def test_any_source_and_destination(
    sources: tuple[selectors.Peer, ...],
    destinations: tuple[selectors.Peer, ...],
    any_source: bool,
    any_destination: bool,
) -> None:
    r = rule(sources=sources, destinations=destinations)
    assert (r.any_source, r.any_destination) == (any_source, any_destination)


def test_actions_are_spelled_as_in_documents() -> None:
    assert [a.value for a in rules.Action] == ["allow", "deny", "pass"]

"""Rule counters on both backends: agents' monotonic totals become growth once (a report sent twice
adds nothing), a new epoch counts from zero, growth lands in the hour it was seen and windows sum
over workloads; lower totals never subtract."""

from __future__ import annotations

import pytest

from microseg.store import database, rulecounters, summaries

HOUR = summaries.BUCKET
T0 = summaries.bucket_of(1_767_225_600.0) + 60
"""A minute into an hour."""


def report(workload: str, epoch: str, at: float, **rules: tuple[int, int]) -> rulecounters.Report:
    counted = tuple(rulecounters.Reported(rule.replace("__", "/"), p, b) for rule, (p, b) in rules.items())
    return rulecounters.Report(workload, epoch, counted, at)


def record(db: database.Database, rep: rulecounters.Report) -> dict[str, tuple[int, int]]:
    with db.write() as conn:
        return {g.rule: (g.packets, g.bytes) for g in rulecounters.record(db, conn, rep)}


def totals(db: database.Database, workload: str) -> dict[str, tuple[int, int, float | None]]:
    with db.read() as conn:
        found = rulecounters.totals(conn, workload)
    return {rule: (t["packets"], t["bytes"], t["lastHit"]) for rule, t in found.items()}


def test_totals_of_one_epoch_add_only_what_grew_and_a_resent_report_adds_nothing(
    db: database.Database,
) -> None:
    assert record(db, report("web-1", "e1", T0, application__web=(3, 180), default=(1, 60))) == {
        "application/web": (3, 180), "default": (1, 60)}  # fmt: skip
    assert record(db, report("web-1", "e1", T0 + 10, application__web=(3, 180), default=(1, 60))) == {}
    assert record(db, report("web-1", "e1", T0 + 20, application__web=(5, 300), default=(1, 60))) == {
        "application/web": (2, 120)}  # fmt: skip
    assert totals(db, "web-1") == {"application/web": (5, 300, T0 + 20), "default": (1, 60, T0)}


def test_a_new_epoch_counts_its_totals_whole(db: database.Database) -> None:
    record(db, report("web-1", "e1", T0, application__web=(10, 600)))
    # the agent restarted: its totals start from zero, so 4 is four new packets, not six fewer
    assert record(db, report("web-1", "e2", T0 + 30, application__web=(4, 240))) == {
        "application/web": (4, 240)
    }
    assert record(db, report("web-1", "e2", T0 + 40, application__web=(6, 360))) == {
        "application/web": (2, 120)
    }
    assert totals(db, "web-1")["application/web"] == (16, 960, T0 + 40)


def test_lower_totals_in_one_epoch_are_a_fresh_start_never_a_subtraction(db: database.Database) -> None:
    record(db, report("web-1", "e1", T0, default=(10, 600)))
    assert record(db, report("web-1", "e1", T0 + 10, default=(2, 120))) == {"default": (2, 120)}
    assert totals(db, "web-1")["default"][:2] == (12, 720)


def test_windows_sum_over_workloads_by_the_hour_growth_was_seen(db: database.Database) -> None:
    record(db, report("web-1", "e1", T0, application__web=(3, 180)))
    record(db, report("web-2", "f1", T0 + 5, application__web=(2, 120), default=(1, 60)))
    record(db, report("web-1", "e1", T0 + HOUR, application__web=(10, 600)))
    with db.read() as conn:
        everything = rulecounters.window(conn)
        later = rulecounters.window(conn, since=T0 + HOUR - 60)
        first_hour = rulecounters.window(conn, until=summaries.bucket_of(T0) + HOUR)
    assert everything == [
        {"rule": "application/web", "packets": 12, "bytes": 720, "lastHit": T0 + HOUR, "workloads": 2},
        {"rule": "default", "packets": 1, "bytes": 60, "lastHit": T0 + 5, "workloads": 1},
    ]
    assert later == [{"rule": "application/web", "packets": 7, "bytes": 420, "lastHit": T0 + HOUR,
                      "workloads": 1}]  # fmt: skip
    assert [(r["rule"], r["packets"]) for r in first_hour] == [("application/web", 5), ("default", 1)]


def test_expiring_drops_old_hours_but_keeps_what_the_next_report_is_compared_with(
    db: database.Database,
) -> None:
    record(db, report("web-1", "e1", T0, default=(3, 180)))
    with db.write() as conn:
        assert rulecounters.expire(conn, T0 + 1) == 1
    assert record(db, report("web-1", "e1", T0 + HOUR, default=(3, 180))) == {}
    with db.read() as conn:
        assert rulecounters.window(conn) == []


@pytest.mark.parametrize(
    ("previous", "reported", "grew"),
    [
        pytest.param(None, (5, 50), (5, 50), id="first-report"),
        pytest.param(("e1", 3, 30), (5, 50), (2, 20), id="same-epoch-grew"),
        pytest.param(("e1", 5, 50), (5, 50), (0, 0), id="same-epoch-unchanged"),
        pytest.param(("e0", 9, 90), (5, 50), (5, 50), id="new-epoch"),
        pytest.param(("e1", 9, 90), (5, 50), (5, 50), id="same-epoch-lower"),
    ],
)
def test_growth(
    previous: tuple[str, int, int] | None, reported: tuple[int, int], grew: tuple[int, int]
) -> None:
    stored = {} if previous is None else {
        "r": {"epoch": previous[0], "reported_packets": previous[1], "reported_bytes": previous[2]}}  # fmt: skip
    (got,) = rulecounters.growth(stored, "e1", [rulecounters.Reported("r", *reported)])
    assert (got.packets, got.bytes) == grew

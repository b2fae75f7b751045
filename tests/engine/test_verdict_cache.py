"""Verdicts cached per time slice equal verdicts computed afresh, explanation included.

The oracle: at a moment t, the estate with its windows resolved at t (a rule active at t loses its
window, any other is disabled) has no timed rule left, so a fresh engine over it decides a flow with
no time in play. One long-lived engine over the estate with its windows, asked about random flows at
random moments (its caches filling as it goes), must answer exactly the same. Moments fall on window
edges and one microsecond either side, are spelled in several zones, and include the hour that
repeats when DST ends (`fold`), where two spellings of one wall-clock time are an hour apart.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microseg.engine import engine, port_index, rulebook, time_slices
from microseg.model import estate, rules, selectors, services, verdicts
from tests.engine.estates import HTTP, MYSQL, TCP, UDP, estates, rule, sel, wl

BERLIN = ZoneInfo("Europe/Berlin")  # DST ends 2026-10-25: 03:00 CEST -> 02:00 CET
NEW_YORK = ZoneInfo("America/New_York")  # DST ends 2026-11-01: 02:00 EDT -> 01:00 EST
KOLKATA = timezone(timedelta(hours=5, minutes=30))
ZONES = (UTC, BERLIN, NEW_YORK, KOLKATA)
EDGES = (
    datetime(2026, 1, 1, tzinfo=UTC),
    datetime(2026, 6, 1, 12, tzinfo=KOLKATA),
    datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN),  # the first 02:30 (CEST, 00:30 UTC)
    datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=BERLIN),  # the second, an hour later (CET)
    datetime(2026, 10, 25, 1, 30, tzinfo=UTC),  # the second 02:30 in Berlin again, spelled in UTC
    datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=NEW_YORK),
    datetime(2027, 1, 1, tzinfo=UTC),
)
NEAR = (timedelta(0), timedelta(microseconds=1), -timedelta(microseconds=1), timedelta(minutes=30),
        -timedelta(hours=1), timedelta(days=40))  # fmt: skip
PROBES = (
    (80, TCP),
    (3306, TCP),
    (22, TCP),
    (53, UDP),
    (8000, TCP),
    (8440, TCP),
    (None, services.Protocol.ICMP),
)
PROCESSES = (None, None, "mysqld", "/usr/sbin/nginx", "nc")
OUTSIDERS = ("10.77.0.77", "10.77.0.200", "10.77.3.3")


@st.composite
def windows(draw: st.DrawFn) -> dict[str, datetime | None]:
    """No window, an open end, or a window between two edges (both ends from EDGES)."""
    start, end = draw(st.sampled_from((None, *EDGES))), draw(st.sampled_from((None, *EDGES)))
    if start is not None and end is not None and rules.instant(start) >= rules.instant(end):
        start = end = None
    return {"not_before": start, "not_after": end}


FROM_CURL = services.Service("web-from-curl", HTTP.specs, client_process="curl")


@st.composite
def timed_estates(draw: st.DrawFn) -> estate.Estate:
    """Random estates whose rules get windows over EDGES (most rules, so that slices matter), some
    rules taking only connections from curl."""
    est = draw(estates())
    timed = tuple(
        dataclasses.replace(
            r, **draw(windows()), **draw(st.sampled_from(({}, {}, {"services": (FROM_CURL,)})))
        )
        for r in est.rules
    )
    return dataclasses.replace(est, rules=timed)


@st.composite
def moments(draw: st.DrawFn) -> datetime:
    """An edge, or near one, spelled in some zone (astimezone sets `fold` in a repeated hour)."""
    at = draw(st.sampled_from(EDGES)) + draw(st.sampled_from(NEAR))
    return at.astimezone(draw(st.sampled_from(ZONES)))


def resolved_at(est: estate.Estate, moment: datetime) -> estate.Estate:
    """The estate as it stands at `moment`: no windows, the rules outside theirs disabled."""
    return dataclasses.replace(
        est,
        rules=tuple(
            dataclasses.replace(r, not_before=None, not_after=None, enabled=r.enabled and r.active_at(moment))
            for r in est.rules
        ),
    )


Asked = tuple[datetime, str | None, str | None]
"""A moment and the (serving, client) processes every flow is asked about then."""


@settings(max_examples=60, deadline=None)
@given(timed_estates(), st.lists(st.tuples(moments(), st.sampled_from(PROCESSES), st.sampled_from((None, "curl", "wget"))),
                                 min_size=2, max_size=4))  # fmt: skip
def test_cached_verdicts_equal_fresh_verdicts_at_every_moment(est: estate.Estate, asked: list[Asked]) -> None:
    eng = engine.PolicyEngine(est)
    ends = [eng.endpoint(n) for n in eng.workload_names()] + [eng.endpoint(a) for a in OUTSIDERS]
    for moment, process, client in asked + asked[::-1]:  # the second time round, from the cache
        oracle = engine.PolicyEngine(resolved_at(est, moment))
        for src in ends:
            for dst in ends:
                for port, proto in PROBES:
                    got = eng.evaluate(
                        src, dst, port, proto, process=process, client_process=client, at=moment
                    )
                    want = oracle.evaluate(
                        oracle.endpoint(str(src.address)), oracle.endpoint(str(dst.address)), port, proto,
                        process=process, client_process=client,
                    )  # fmt: skip
                    assert got == want, (moment, src, dst, port, proto, process, client)


# -- the cache is used, per slice ------------------------------------------------------------

OPEN, CLOSE = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
MICRO = timedelta(microseconds=1)
JANUARY = rule("january", "application", 20, "allow", (sel("role=web"),), (sel("role=db"),), (MYSQL,),
               not_before=OPEN, not_after=CLOSE)  # fmt: skip


@pytest.fixture
def windowed() -> engine.PolicyEngine:
    """web may reach db on mysql in January 2026 only; lb reaches web always."""
    return engine.PolicyEngine(
        estate.Estate(
            workloads=(
                wl("lb", "10.77.1.1", role="lb"),
                wl("web", "10.77.1.2", role="web"),
                wl("db", "10.77.1.3", role="db"),
            ),
            rules=(
                rule("lb-web", "application", 10, "allow", (sel("role=lb"),), (sel("role=web"),), (HTTP,)),
                JANUARY,
            ),
        )
    )


def ask(eng: engine.PolicyEngine, src: str, dst: str, port: int, at: datetime | None) -> verdicts.Verdict:
    return eng.evaluate(eng.endpoint(src), eng.endpoint(dst), port, TCP, at=at)


def test_timed_rules_no_longer_bypass_the_cache(windowed: engine.PolicyEngine) -> None:
    first = ask(windowed, "lb", "web", 443, OPEN)
    assert first.rule == "application/lb-web"
    assert ask(windowed, "lb", "web", 443, OPEN + timedelta(days=3)) is first  # same slice: remembered


@pytest.mark.parametrize(
    ("moment", "rule"),
    [(OPEN - MICRO, None), (OPEN, "application/january"), (CLOSE - MICRO, "application/january"),
     (CLOSE, None), (CLOSE.astimezone(BERLIN), None), ((CLOSE - MICRO).astimezone(NEW_YORK), "application/january")],
    ids=["before-open", "at-open", "before-close", "at-close", "close-in-berlin", "before-close-in-new-york"],
)  # fmt: skip
def test_window_edges_with_a_warm_cache(
    windowed: engine.PolicyEngine, moment: datetime, rule: str | None
) -> None:
    for warm in (OPEN - MICRO, OPEN, CLOSE - MICRO, CLOSE):
        ask(windowed, "web", "db", 3306, warm)
    assert ask(windowed, "web", "db", 3306, moment).rule == rule


def test_no_moment_means_now(windowed: engine.PolicyEngine) -> None:
    now = datetime.now(UTC)
    around_now = dataclasses.replace(
        JANUARY, not_before=now - timedelta(days=1), not_after=now + timedelta(days=1)
    )
    current = engine.PolicyEngine(dataclasses.replace(windowed.estate, rules=(around_now,)))
    assert ask(current, "web", "db", 3306, None).rule == "application/january"
    assert ask(windowed, "web", "db", 3306, None).rule is None  # now is not in January 2026


def test_a_naive_moment_is_local_time(windowed: engine.PolicyEngine) -> None:
    local = (CLOSE - MICRO).astimezone()  # the machine's zone, whatever it is
    naive = local.replace(tzinfo=None)
    assert ask(windowed, "web", "db", 3306, naive) == ask(windowed, "web", "db", 3306, local)
    assert ask(windowed, "web", "db", 3306, naive).rule == "application/january"


# -- windows compare instants ----------------------------------------------------------------


def test_a_window_closes_at_its_instant_in_the_repeated_dst_hour() -> None:
    """The first 02:30 on 2026-10-25 in Berlin is an hour before the second 02:15: comparing the two
    wall clocks (Python's rule for one zone) would keep the window open for another hour; nftables'
    `meta time` compares instants, and so does the evaluator."""
    first_0230 = datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN)
    second_0215 = datetime(2026, 10, 25, 2, 15, fold=1, tzinfo=BERLIN)
    r = rule("maintenance", "application", 10, "allow", (selectors.AnyPeer(),), (selectors.AnyPeer(),),
             (HTTP,), not_after=first_0230)  # fmt: skip
    assert second_0215 - first_0230 == timedelta(minutes=-15)  # what the wall clocks say
    assert rules.instant(second_0215) - rules.instant(first_0230) == 45 * 60 * 1_000_000
    assert not r.active_at(second_0215)
    assert r.active_at(second_0215 - timedelta(hours=1))  # the first 02:15, CEST


def test_a_window_across_the_repeated_dst_hour_is_valid() -> None:
    """02:30 (CEST) to 02:30 (CET) is one hour long, not empty."""
    r = rule("one-hour", "application", 10, "allow", (selectors.AnyPeer(),), (selectors.AnyPeer(),), (HTTP,),
             not_before=datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN),
             not_after=datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=BERLIN))  # fmt: skip
    assert r.active_at(datetime(2026, 10, 25, 1, 0, tzinfo=UTC))


# -- the parts ---------------------------------------------------------------------------------


def test_slices_share_keys_and_edges_are_instants() -> None:
    def timed(name: str, start: datetime | None, end: datetime | None) -> rules.Rule:
        return rule(name, "application", 10, "allow", (selectors.AnyPeer(),), (selectors.AnyPeer(),), (HTTP,),
                    not_before=start, not_after=end)  # fmt: skip

    book_rules = (
        timed("a", OPEN, CLOSE),
        timed("b", OPEN.astimezone(BERLIN), None),  # the same instant as a's start, spelled in Berlin
        rule("c", "application", 30, "allow", (selectors.AnyPeer(),), (selectors.AnyPeer(),), (HTTP,)),
    )
    slices = time_slices.TimeSlices(book_rules)
    assert slices.edges == (rules.instant(OPEN), rules.instant(CLOSE))
    before, inside, after = (slices.at(m) for m in (OPEN - MICRO, OPEN, CLOSE))
    assert (before.active, inside.active, after.active) == (0b100, 0b111, 0b110)
    assert len({before.key, inside.key, after.key}) == 3
    assert slices.at(CLOSE + timedelta(days=400)) is after
    assert time_slices.TimeSlices(book_rules[2:]).at(None).active == 0b1


MATCHERS = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from([p for p in services.Protocol if p is not services.Protocol.ANY]),
        st.lists(
            st.tuples(st.integers(1, 30), st.integers(0, 6)).map(lambda t: (t[0], t[0] + t[1])), max_size=3
        ).map(lambda rs: tuple(sorted(rs))),
        max_size=3,
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(MATCHERS, max_size=8))
def test_port_index_equals_ports_match(matchers: list[port_index.PortMatcher]) -> None:
    index = port_index.PortIndex(matchers)
    for protocol in services.Protocol:
        for port in (None, *range(-1, 40), 65535, 70000):
            want = sum(1 << i for i, m in enumerate(matchers) if rulebook.ports_match(m, protocol, port))
            assert index.mask(protocol, port) == want, (protocol, port)

"""The collector is off while any analysis runs, back on when the last one ends (also on failure),
and stays off for a caller that turned it off."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from microseg.analytics import collecting, depmap
from tests.analytics import APP1, WEB1, example_engine, row


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_an_analysis_runs_with_the_collector_off_and_leaves_it_on() -> None:
    seen: list[bool] = []

    @collecting.while_paused
    def analysis(value: int) -> int:
        seen.append(gc.isenabled())
        return value + 1

    assert analysis(1) == 2
    assert seen == [False] and gc.isenabled()


def test_the_collector_comes_back_when_an_analysis_fails() -> None:
    @collecting.while_paused
    def failing() -> None:
        raise ValueError("bad row")

    with pytest.raises(ValueError):
        failing()
    assert gc.isenabled()


def test_the_collector_stays_off_until_the_last_of_overlapping_analyses_ends() -> None:
    first_in, second_done, release = threading.Event(), threading.Event(), threading.Event()
    during: list[bool] = []

    def first() -> None:
        with collecting.paused():
            first_in.set()
            release.wait(10)

    def second() -> None:
        first_in.wait(10)
        with collecting.paused():
            pass
        during.append(gc.isenabled())  # the first still runs
        second_done.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    assert second_done.wait(10)
    release.set()
    for t in threads:
        t.join(10)
    assert during == [False] and gc.isenabled()


def test_a_caller_that_turned_the_collector_off_keeps_it_off() -> None:
    gc.disable()
    engine = example_engine()
    graph = depmap.build([row("prod-app-1", "in", WEB1, APP1, 8443)], engine, None, ())
    assert graph.edges and not gc.isenabled()

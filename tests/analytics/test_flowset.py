"""Flow sets: the row reader's inline checks agree with `parse`, and a FlowSet is `flows` folded."""

from __future__ import annotations

from typing import Any

import pytest

from microseg.analytics import flowset
from microseg.errors import ValidationError
from tests.analytics import APP1, BUCKET, WEB1, example_engine, hour_of_traffic, row

ENGINE = example_engine()


def day_of_traffic() -> list[dict[str, Any]]:
    """The hour of traffic three times over, each hour with other counts, in a shuffled order."""
    rows = []
    for hour in (2, 0, 1):
        for r in hour_of_traffic():
            n = r["connections"] + hour
            rows.append(r | {"bucket": BUCKET + 3600 * hour, "firstSeen": BUCKET + 3600 * hour + hour,
                             "lastSeen": BUCKET + 3600 * hour + 100, "connections": n, "bytes": 7 * n})  # fmt: skip
    return rows


def test_occurrences_replay_flows_in_order_with_each_buckets_connections() -> None:
    rows = day_of_traffic()
    window = flowset.flow_set(rows, ENGINE)
    replayed = [(flowset.question(window.distinct[i]), c) for i, c in window.occurrences]
    assert replayed == [(flowset.question(f), f.connections) for f in flowset.flows(rows, ENGINE)]


def test_a_distinct_flow_sums_its_buckets_and_spans_their_times() -> None:
    rows = day_of_traffic()
    window = flowset.flow_set(rows, ENGINE)
    every = flowset.flows(rows, ENGINE)
    assert len(window.distinct) == len(every) // 3
    for flow in window.distinct:
        same = [f for f in every if flowset.question(f) == flowset.question(flow)]
        assert flow.connections == sum(f.connections for f in same)
        assert flow.bytes == sum(f.bytes for f in same)
        assert (flow.first_seen, flow.last_seen) == (
            min(f.first_seen for f in same),
            max(f.last_seen for f in same),
        )
        assert (flow.source, flow.destination, flow.reporters) == (
            same[0].source,
            same[0].destination,
            same[0].reporters,
        )
    assert window.connections == sum(f.connections for f in every)


def test_flows_differing_in_the_recorded_verdict_stay_apart() -> None:
    rows = [row("prod-app-1", "in", WEB1, APP1, 8443, bucket=b, verdict=v)
            for b, v in ((BUCKET, "allowed"), (BUCKET + 3600, "would-block"))]  # fmt: skip
    assert [f.verdict.value for f in flowset.flow_set(rows, ENGINE).distinct] == ["allowed", "would-block"]


@pytest.mark.parametrize(
    "change",
    [
        {"bucket": int(BUCKET), "firstSeen": int(BUCKET) + 5},  # whole-number times
        {"dport": None},
        {"process": "java", "rule": "application/x"},
    ],
    ids=["int-times", "no-port", "process-and-rule"],
)
def test_the_inline_checks_type_a_row_as_parse_does(change: dict[str, Any]) -> None:
    r = row("prod-app-1", "in", WEB1, APP1, 8443) | change
    # the first sight of an address goes through parse, the second row is checked inline
    through_parse, inline = flowset.flows([r, r], ENGINE)
    assert through_parse == inline
    parsed = flowset.parse(r)
    assert (inline.first_seen, inline.dport, inline.process, inline.rule) == (
        parsed.first_seen,
        parsed.dport,
        parsed.process,
        parsed.rule,
    )
    assert type(inline.first_seen) is float


def test_optional_fields_may_be_left_out() -> None:
    r = row("prod-app-1", "in", WEB1, APP1, 8443)
    for key in ("dport", "process", "rule"):
        del r[key]
    flows = flowset.flows([r, r], ENGINE)
    assert [(f.dport, f.process, f.rule) for f in flows] == [(None, None, None)] * 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("direction", "sideways"),
        ("dport", 70000),
        ("dport", True),
        ("proto", "gre"),
        ("verdict", "maybe"),
        ("connections", -1),
        ("bytes", True),
        ("bucket", "noon"),
        ("reporter", ""),
        ("process", ""),
        ("rule", 7),
        ("src", "10.77.1.300"),
        ("dst", "prod-db-1"),
        ("src", "10.77.1.0/24"),
        ("firstSeen", float("nan")),
        ("lastSeen", float("inf")),
        ("lastSeen", 0.0),  # before firstSeen
    ],
)
def test_a_bad_row_after_good_ones_is_skipped_and_counted_and_parse_names_the_field(
    field: str, value: Any
) -> None:
    good = row("prod-app-1", "in", WEB1, APP1, 8443)
    bad = good | {field: value}
    found, skipped = flowset.counted_flows([good, bad, good], ENGINE)
    assert (len(found), skipped) == (2, 1)  # one bad stored row must not take the analysis away
    assert flowset.flow_set([good, bad], ENGINE).skipped == 1
    # the store's bulk read gives the same row as a sequence of values: the same one check applies
    found, skipped = flowset.counted_flows([_values(good), _values(bad), _values(good)], ENGINE)
    assert (len(found), skipped) == (2, 1)
    for shape in (bad, _values(bad)):
        with pytest.raises(ValidationError) as info:
            flowset.parse(shape)
        assert info.value.field == field


def _values(r: dict[str, Any]) -> tuple[Any, ...]:
    """A row as the store's bulk read gives it: its values in `FIELDS` order."""
    return tuple(r[k] for k in flowset.FIELDS)


def test_check_types_a_mapping_and_its_values_alike() -> None:
    r = row("prod-app-1", "in", WEB1, APP1, None, process="java") | {"bucket": int(BUCKET),
                                                                      "firstSeen": int(BUCKET) + 5}  # fmt: skip
    from_mapping, from_values = flowset.check(r), flowset.check(_values(r))
    assert from_mapping == from_values
    assert (from_mapping.bucket, from_mapping.first_seen, from_mapping.dport, from_mapping.process) == (
        BUCKET, BUCKET + 5, None, "java"
    )  # fmt: skip
    assert type(from_mapping.bucket) is float and type(from_values.first_seen) is float


@pytest.mark.parametrize(
    "values", [(), ("x",) * 14, ("x",) * 16, "not a row"], ids=["empty", "short", "long", "text"]
)
def test_a_row_of_the_wrong_length_is_skipped_and_counted(values: Any) -> None:
    good = row("prod-app-1", "in", WEB1, APP1, 8443)
    flows, skipped = flowset.counted_flows([good, values, _values(good)], ENGINE)
    assert (len(flows), skipped) == (2, 1)


def test_good_rows_in_either_shape_give_the_same_flows() -> None:
    rows = day_of_traffic()
    assert flowset.flow_set([_values(r) for r in rows], ENGINE) == flowset.flow_set(rows, ENGINE)


def test_one_address_written_two_ways_is_one_end() -> None:
    rows = [row("a", "in", "2001:db8::1", APP1, 80), row("b", "out", "2001:db8:0::1", APP1, 80)]
    (flow,) = flowset.flows(rows, ENGINE)
    assert flow.reporters == ("a", "b")


def _report(direction: str, reporter: str, process: str | None) -> flowset.Record:
    """A checked report with only what merging reads filled in."""
    return flowset.Record(BUCKET, reporter, direction, "10.0.0.1", "10.0.0.2", 80, "tcp", process,
                          "allowed", None, BUCKET, BUCKET, 1, 1, 1)  # fmt: skip


def _merged_by_the_book(reports: list[flowset.Record]) -> list[flowset.Merged]:
    """The merge rule spelled out: "in" rows count, "out" rows add one client process and reporters."""
    ins = [r for r in reports if r.direction == "in"]
    outs = [r for r in reports if r.direction != "in"]
    if not ins:
        return [flowset.Merged(r, None, r.process, (r.reporter,)) for r in outs]
    clients = {r.process for r in outs if r.process is not None}
    client = clients.pop() if len(clients) == 1 else None
    return [
        flowset.Merged(r, r.process, client, (r.reporter, *sorted({o.reporter for o in outs}))) for r in ins
    ]


IN_A, IN_B = _report("in", "db1", "postgres"), _report("in", "db2", None)
OUT_A, OUT_B, OUT_QUIET = (
    _report("out", "app1", "java"),
    _report("out", "app2", "curl"),
    _report("out", "app3", None),
)


@pytest.mark.parametrize(
    "reports",
    [[IN_A], [OUT_A], [OUT_QUIET], [IN_A, OUT_A], [OUT_A, IN_A], [IN_B, OUT_QUIET], [IN_A, IN_B],
     [OUT_A, OUT_B], [IN_A, OUT_A, OUT_B], [IN_A, OUT_A, OUT_QUIET], [IN_A, IN_B, OUT_A]],
    ids=["in", "out", "quiet-out", "in-out", "out-in", "quiet-in-out", "two-ins", "two-outs",
         "in-two-clients", "in-one-client-one-quiet", "two-ins-one-out"],
)  # fmt: skip
def test_merging_the_two_reports_follows_the_rule(reports: list[flowset.Record]) -> None:
    assert flowset._merge(reports) == _merged_by_the_book(reports)

"""A batch folded in memory and written with one statement gives exactly the summaries that
adding its records one at a time gives, on real SQLite and real PostgreSQL: same keys, sums,
first/last seen to the last bit of a double, and rows in the order their keys first appeared.
The ingest path folds every batch this way (`summaries.fold` + `summaries.write`)."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microseg.store import database, summaries

HOUR = 3600.0
T0 = 1_700_000_000.0 - 1_700_000_000.0 % HOUR
_reporters = itertools.count()

times = st.floats(min_value=T0 - HOUR, max_value=T0 + 2 * HOUR, allow_nan=False, allow_infinity=False)
record = st.fixed_dictionaries(
    {"direction": st.sampled_from(["in", "out"]), "src": st.sampled_from(["10.0.0.1", "10.0.0.2", "fd00::1"]),
     "dst": st.sampled_from(["10.0.0.9", "192.0.2.1"]), "proto": st.sampled_from(["tcp", "udp"]),
     "verdict": st.sampled_from(["allowed", "blocked", "would-block"]), "first_seen": times,
     "span": st.floats(min_value=0, max_value=7200, allow_nan=False)},
    optional={"dport": st.none() | st.sampled_from([22, 443]), "process": st.none() | st.sampled_from(["", "nginx", "ß/ünï"]),
              "rule": st.none() | st.sampled_from(["app/web", "x'y\"z"]), "bytes": st.integers(0, 2**50),
              "packets": st.integers(0, 2**40), "connections": st.integers(0, 2**30)},
)  # fmt: skip
"""Records from a small key space (so keys repeat within and across batches), any field left out
or None, times that straddle hour buckets, text that needs quoting, sums far past 32 bits."""


def agent_form(drawn: dict[str, Any]) -> dict[str, Any]:
    """A drawn record as an agent sends it: last_seen from first_seen plus a span."""
    out = {k: v for k, v in drawn.items() if k != "span"}
    out["last_seen"] = drawn["first_seen"] + drawn["span"]
    return out


def stored(db: database.Database, reporter: str) -> list[tuple[Any, ...]]:
    """The reporter's rows, by id (the order keys were first written), every column but the id."""
    with db.read() as conn:
        rows = summaries.query(conn, filters=summaries.Filters(reporter=reporter))
    return [tuple(r.values()) for r in rows]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(record, max_size=30), min_size=1, max_size=4))
def test_a_folded_batch_writes_what_its_records_one_by_one_write(
    db: database.Database, batches: list[list[dict[str, Any]]]
) -> None:
    n = next(_reporters)
    folded, one_by_one = f"folded-{n}", f"single-{n}"
    for batch in batches:
        records = [agent_form(r) for r in batch]
        with db.write() as conn:
            summaries.add_batch(db, conn, folded, records)
        for r in records:
            with db.write() as conn:
                summaries.add_batch(db, conn, one_by_one, [r])
    assert stored(db, folded) == [(r[0], folded, *r[2:]) for r in stored(db, one_by_one)]


def test_times_and_big_sums_come_back_exactly(db: database.Database) -> None:
    """Doubles that need all 17 digits and sums past 2**53 survive the trip through the driver
    (PostgreSQL receives the batch as JSON text)."""
    odd = T0 + 0.1 + 2**-20
    rec = {"direction": "out", "src": "10.0.0.1", "dst": "10.0.0.9", "proto": "tcp", "verdict": "allowed",
           "first_seen": odd, "last_seen": odd + 1e-6, "bytes": 2**53 + 1, "connections": 3}  # fmt: skip
    with db.write() as conn:
        assert summaries.add_batch(db, conn, "exact", [rec, {**rec, "first_seen": odd - 1e-9}]) == 1
    with db.read() as conn:
        [row] = summaries.query(conn, filters=summaries.Filters(reporter="exact"))
    assert (row["firstSeen"], row["lastSeen"]) == (odd - 1e-9, odd + 1e-6)
    assert (row["bytes"], row["connections"], row["packets"]) == (2 * (2**53 + 1), 6, 0)
    assert (row["dport"], row["process"], row["rule"]) == (None, None, None)


def test_an_empty_batch_writes_nothing(db: database.Database) -> None:
    with db.write() as conn:
        assert summaries.add_batch(db, conn, "empty", []) == 0
    with db.read() as conn:
        assert summaries.counts(conn) == 0


def test_a_key_lists_the_unique_key_columns_in_order() -> None:
    """The folded rows are written by position: a key's fields must be the table's key columns."""
    assert summaries.Key._fields == summaries.KEY
    assert (*summaries.KEY, "first_seen", "last_seen", *summaries.SUMS) == summaries.COLUMNS


def test_sums_saturate_at_the_column_limit_instead_of_failing(db: database.Database) -> None:
    """Records may carry up to 2**62 each (the API's bound); many of them, within a batch and across
    batches, must neither fail the write (PostgreSQL: bigint out of range, a 5xx for the agent) nor
    turn into a float (SQLite): the sum stops at 2**63 - 1."""
    big = {"direction": "out", "src": "10.0.0.1", "dst": "10.0.0.9", "proto": "tcp", "dport": 443,
           "verdict": "allowed", "first_seen": T0, "last_seen": T0 + 1,
           "bytes": 2**62, "packets": 2**62, "connections": 2**62}  # fmt: skip
    for _ in range(3):
        with db.write() as conn:
            summaries.add_batch(db, conn, "saturating", [big] * 3)
    [row] = summaries_of(db, "saturating")
    assert (row["bytes"], row["packets"], row["connections"]) == (summaries.SUM_MAX,) * 3
    assert all(type(row[k]) is int for k in ("bytes", "packets", "connections"))


def summaries_of(db: database.Database, reporter: str) -> list[dict[str, Any]]:
    with db.read() as conn:
        return [dict(r) for r in summaries.query(conn, filters=summaries.Filters(reporter=reporter))]

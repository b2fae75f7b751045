"""The store reads and writes enrollment runs under its lock (issue 17), each in one statement:
creating a workload with its address and name rows, the name in any case, who holds an address,
taking an agent slot. Both backends; PostgreSQL creates a workload by another statement than
SQLite does, so both must leave the same rows."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
import sqlalchemy as sa

from microseg.store import agents, database, objects


def workload(name: str, *addresses: str) -> dict[str, Any]:
    return {"apiVersion": "microseg.io/v1", "kind": "Workload", "metadata": {"name": name},
            "spec": {"kind": "vm", "addresses": list(addresses)}}  # fmt: skip


def net(text: str) -> objects.Network:
    return ipaddress.ip_network(text)


def test_create_leaves_the_rows_put_leaves(db: database.Database) -> None:
    with db.write() as conn:
        made = objects.create(conn, "Workload", "Web-1", workload("Web-1", "10.9.0.1", "10.9.1.0/24"), "t")
        objects.put(conn, "Workload", "web-2", workload("web-2", "10.9.0.2", "10.9.2.0/24"), "t")
        objects.create(conn, "Rule", "r", {"kind": "Rule", "metadata": {"name": "r"}}, "t")
        objects.create(conn, "Workload", "bare", workload("bare"), "t")
    with db.read() as conn:
        assert objects.get(conn, "Workload", "Web-1") == made
        assert objects.get(conn, "Rule", "r") is not None
        rows = {(r.workload, r.network, r.is_host) for r in conn.execute(sa.select(objects.A))}
        assert rows == {("Web-1", "10.9.0.1/32", True), ("Web-1", "10.9.1.0/24", False),
                        ("web-2", "10.9.0.2/32", True), ("web-2", "10.9.2.0/24", False)}  # fmt: skip
        names = {(r.folded, r.name) for r in conn.execute(sa.select(objects.N))}
        assert names == {("web-1", "Web-1"), ("web-2", "web-2"), ("bare", "bare")}


def test_creating_a_stored_workload_fails_and_writes_nothing(db: database.Database) -> None:
    with db.write() as conn:
        objects.create(conn, "Workload", "w", workload("w", "10.9.0.1"), "t")
    with pytest.raises(sa.exc.IntegrityError), db.write() as conn:
        objects.create(conn, "Workload", "w", workload("w", "10.9.0.9"), "t")
    with db.read() as conn:
        assert objects.address_holder(conn, net("10.9.0.9/32"), "other") is None
        assert objects.address_holder(conn, net("10.9.0.1/32"), "other") == "w"


def test_a_name_is_found_as_it_is_else_the_first_in_another_case(db: database.Database) -> None:
    with db.write() as conn:
        for name in ("web-B", "WEB-b", "web-b"):
            objects.put(conn, "Workload", name, workload(name), "t")
    with db.read() as conn:
        assert objects.named_in_any_case(conn, "Workload", "WEB-b") == "WEB-b"
        assert objects.named_in_any_case(conn, "Workload", "web-b") == "web-b"
        ordered = list(conn.execute(sa.select(objects.N.c.name).order_by(objects.N.c.name)).scalars())
        assert objects.named_in_any_case(conn, "Workload", "Web-B") == ordered[0]
        assert objects.named_in_any_case(conn, "Workload", "web-c") is None


@pytest.mark.parametrize(
    ("claimed", "me", "holder"),
    [
        ("10.8.0.5/32", "new", "host"),  # a host held as a host wins over the network around it
        ("10.8.0.6/32", "new", "net"),  # inside the network only
        ("10.8.0.5/32", "host", "net"),  # its own host does not count; the network does
        ("10.8.0.4/30", "new", "host"),  # a network holding a held host
        ("10.8.1.0/24", "new", None),
        ("10.8.0.5/32", "net", "host"),
        ("fd00::5/128", "new", None),  # another version
    ],
    ids=["host-first", "in-network", "own-host", "network-claim", "free", "own-network", "v6"],
)
def test_who_holds_an_address(db: database.Database, claimed: str, me: str, holder: str | None) -> None:
    with db.write() as conn:
        objects.create(conn, "Workload", "host", workload("host", "10.8.0.5"), "t")
        objects.create(conn, "Workload", "net", workload("net", "10.8.0.0/24"), "t")
    with db.read() as conn:
        assert objects.address_holder(conn, net(claimed), me) == holder


def test_an_agent_slot_is_taken_once_live_or_revoked(db: database.Database) -> None:
    with db.write() as conn:
        ident, credential = agents.create_unless_taken(db, conn, "w", {"hostname": "w"}, "tok") or ("", "")
        assert agents.create_unless_taken(db, conn, "w", {"hostname": "again"}) is None
        agents.revoke(conn, ident)
        assert agents.create_unless_taken(db, conn, "w", {"hostname": "again"}) is None
        other = agents.create_unless_taken(db, conn, "v", {"hostname": "v"})
    with db.read() as conn:
        row = agents.by_workload(conn, "w") or {}
        assert (row["id"], row["inventory"], row["enrollment_token"]) == (ident, {"hostname": "w"}, "tok")
        assert agents.find(conn, credential) is None  # revoked
        assert other is not None and (agents.find(conn, other[1]) or {})["workload"] == "v"

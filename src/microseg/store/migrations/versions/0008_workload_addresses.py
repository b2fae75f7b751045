"""Indexed address ownership and case-insensitive workload names: the table `workload_addresses`
(each workload's addresses as byte ranges) and `workload_names` (each workload's name in lower
case), both filled from the stored workloads, so enrolling an agent no longer reads every workload.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import ipaddress
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    names = op.create_table(
        "workload_names",
        sa.Column("folded", sa.String(300), primary_key=True),
        sa.Column("name", sa.String(300), primary_key=True),
    )
    table = op.create_table(
        "workload_addresses",
        sa.Column("workload", sa.String(300), primary_key=True),
        sa.Column("network", sa.String(64), primary_key=True),
        sa.Column("version", sa.SmallInteger, nullable=False),
        sa.Column("is_host", sa.Boolean, nullable=False),
        sa.Column("low", sa.LargeBinary(16), nullable=False),
        sa.Column("high", sa.LargeBinary(16), nullable=False),
        sa.Index("ix_workload_addresses_range", "is_host", "version", "low"),
    )
    assert table is not None and names is not None
    objects = sa.table(
        "objects", sa.column("kind", sa.String), sa.column("name", sa.String), sa.column("doc", JSON)
    )
    conn = op.get_bind()
    query = sa.select(objects.c.name, objects.c.doc).where(objects.c.kind == "Workload")
    stored = list(conn.execute(query))
    rows = [row for name, doc in stored for row in _rows(name, doc)]
    if rows:
        conn.execute(sa.insert(table), rows)
    if stored:
        conn.execute(sa.insert(names), [{"folded": name.lower(), "name": name} for name, _ in stored])


def _rows(name: str, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of one workload (as `objects.address_rows` makes them, frozen here)."""
    found: dict[str, dict[str, Any]] = {}
    for text in ((doc or {}).get("spec") or {}).get("addresses") or []:
        try:
            net = ipaddress.ip_network(str(text).strip(), strict=False)
        except ValueError:
            continue
        found[str(net)] = {
            "workload": name,
            "network": str(net),
            "version": net.version,
            "is_host": net.num_addresses == 1,
            "low": int(net.network_address).to_bytes(16, "big"),
            "high": int(net.broadcast_address).to_bytes(16, "big"),
        }
    return list(found.values())


def downgrade() -> None:
    op.drop_table("workload_addresses")
    op.drop_table("workload_names")

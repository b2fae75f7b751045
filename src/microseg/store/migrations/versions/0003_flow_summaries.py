"""Flow summaries: flow records summed per hour bucket and summary key, upserted at ingest, for
the visibility queries (`GET /flows/summary`) and the analytics that read a time window.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TIME: sa.Double[float] = sa.Double()
SERIAL = sa.BigInteger().with_variant(sa.Integer, "sqlite")
KEY = ("bucket", "reporter", "direction", "src", "dst", "dport", "proto", "process", "verdict", "rule")


def upgrade() -> None:
    op.create_table(
        "flow_summaries",
        sa.Column("id", SERIAL, primary_key=True, autoincrement=True),
        sa.Column("bucket", TIME, nullable=False),
        sa.Column("reporter", sa.String(300), nullable=False),
        sa.Column("direction", sa.String(3), nullable=False),
        sa.Column("src", sa.String(64), nullable=False),
        sa.Column("dst", sa.String(64), nullable=False),
        sa.Column("dport", sa.Integer, nullable=False),
        sa.Column("proto", sa.String(8), nullable=False),
        sa.Column("process", sa.String(300), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("rule", sa.String(200), nullable=False),
        sa.Column("first_seen", TIME, nullable=False),
        sa.Column("last_seen", TIME, nullable=False),
        sa.Column("connections", sa.BigInteger, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("packets", sa.BigInteger, nullable=False),
        sa.UniqueConstraint(*KEY, name="uq_flow_summaries_key"),
    )
    op.create_index("ix_flow_summaries_last_seen", "flow_summaries", ["last_seen"])
    op.create_index("ix_flow_summaries_dport", "flow_summaries", ["dport", "last_seen"])


def downgrade() -> None:
    op.drop_table("flow_summaries")

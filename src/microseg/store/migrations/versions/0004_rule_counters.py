"""Rule counters: agents report per-rule packet and byte totals from their nftables/iptables
counters; the server keeps the last totals per workload and rule and what they grew by per hour,
for rule hits that do not depend on flow records.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TIME: sa.Double[float] = sa.Double()


def upgrade() -> None:
    op.create_table(
        "rule_counters",
        sa.Column("workload", sa.String(300), primary_key=True),
        sa.Column("rule", sa.String(520), primary_key=True),
        sa.Column("epoch", sa.String(64), nullable=False),
        sa.Column("reported_packets", sa.BigInteger, nullable=False),
        sa.Column("reported_bytes", sa.BigInteger, nullable=False),
        sa.Column("packets", sa.BigInteger, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("last_hit", TIME, nullable=True),
        sa.Column("updated_at", TIME, nullable=False),
    )
    op.create_table(
        "rule_counter_hours",
        sa.Column("bucket", TIME, primary_key=True),
        sa.Column("workload", sa.String(300), primary_key=True),
        sa.Column("rule", sa.String(520), primary_key=True),
        sa.Column("packets", sa.BigInteger, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("last_hit", TIME, nullable=False),
    )
    op.create_index("ix_rule_counter_hours_last_hit", "rule_counter_hours", ["last_hit"])


def downgrade() -> None:
    op.drop_table("rule_counter_hours")
    op.drop_table("rule_counters")

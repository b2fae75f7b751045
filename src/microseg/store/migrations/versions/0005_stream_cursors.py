"""SIEM streaming: a durable cursor per sink and source, and a lease per sink so that one replica
streams to it at a time.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TIME: sa.Double[float] = sa.Double()


def upgrade() -> None:
    op.create_table(
        "stream_cursors",
        sa.Column("sink", sa.String(200), primary_key=True),
        sa.Column("source", sa.String(16), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
    )
    op.create_table(
        "stream_leases",
        sa.Column("sink", sa.String(200), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("expires_at", TIME, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("stream_leases")
    op.drop_table("stream_cursors")

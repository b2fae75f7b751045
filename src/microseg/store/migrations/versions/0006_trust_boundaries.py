"""Trust boundaries: API tokens name the person who holds them (four-eyes compares owners),
enrollment tokens name the workloads they may adopt and the address ranges their agents may claim,
an agent remembers the enrollment token it came with, and webhook replays are kept in the database
so that every replica (and a restarted one) refuses a signed call seen before.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME: sa.Double[float] = sa.Double()


def upgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("owner", sa.String(200), nullable=False, server_default=""))
    op.execute("UPDATE api_tokens SET owner = name WHERE owner = ''")
    with op.batch_alter_table("enrollment_tokens") as batch:
        batch.add_column(sa.Column("workloads", JSON, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("address_ranges", JSON, nullable=False, server_default="[]"))
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("enrollment_token", sa.String(32), nullable=True))
    op.create_table(
        "hook_replays",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("hook", sa.String(200), nullable=False),
        sa.Column("expires_at", TIME, nullable=False),
        sa.Index("ix_hook_replays_expires_at", "expires_at"),
    )


def downgrade() -> None:
    op.drop_table("hook_replays")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("enrollment_token")
    with op.batch_alter_table("enrollment_tokens") as batch:
        batch.drop_column("address_ranges")
        batch.drop_column("workloads")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("owner")

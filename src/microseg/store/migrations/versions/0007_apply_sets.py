"""Apply sets: which set of policy files (`microseg apply --set NAME`) manages an object and which
fields its files declared, so that `apply --prune` deletes only that set's objects and a re-apply
removes only what the set itself declared before.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME: sa.Double[float] = sa.Double()


def upgrade() -> None:
    op.create_table(
        "applied_objects",
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(300), primary_key=True),
        sa.Column("apply_set", sa.String(200), nullable=False),
        sa.Column("fields", JSON, nullable=False),
        sa.Column("applied_at", TIME, nullable=False),
        sa.Column("applied_by", sa.String(200), nullable=False),
        sa.Index("ix_applied_objects_apply_set", "apply_set"),
    )


def downgrade() -> None:
    op.drop_table("applied_objects")

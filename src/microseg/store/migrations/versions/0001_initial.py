"""The initial control-plane schema: objects, state, versions, audit, tokens, agents, flow batches, events.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME: sa.Double[float] = sa.Double()
SERIAL = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "objects",
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(300), primary_key=True),
        sa.Column("doc", JSON, nullable=False),
        sa.Column("etag", sa.String(64), nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
    )
    state = op.create_table(
        "state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("active_version", sa.Integer, nullable=False),
        sa.Column("inventory_generation", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(state, [{"id": 1, "active_version": 0, "inventory_generation": 0}])
    op.create_table(
        "versions",
        sa.Column("number", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("rollback_of", sa.Integer, nullable=True),
        sa.Column("documents", JSON, nullable=False),
        sa.Column("changes", JSON, nullable=False),
    )
    op.create_table(
        "audit",
        sa.Column("id", SERIAL, primary_key=True, autoincrement=True),
        sa.Column("at", TIME, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(400), nullable=False),
        sa.Column("details", JSON, nullable=False),
    )
    _append_only("audit")
    _tokens()
    _agents_and_flows()


def _tokens() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("revoked_at", TIME, nullable=True),
    )
    op.create_table(
        "enrollment_tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("labels", JSON, nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("reusable", sa.Boolean, nullable=False),
        sa.Column("uses", sa.Integer, nullable=False),
        sa.Column("expires_at", TIME, nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("revoked_at", TIME, nullable=True),
    )


def _agents_and_flows() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("workload", sa.String(300), nullable=False, unique=True),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("enrolled_at", TIME, nullable=False),
        sa.Column("last_seen", TIME, nullable=False),
        sa.Column("online", sa.Boolean, nullable=False),
        sa.Column("inventory", JSON, nullable=False),
        sa.Column("applied_hash", sa.String(80), nullable=True),
        sa.Column("dataplane", sa.String(32), nullable=True),
        sa.Column("errors", JSON, nullable=False),
        sa.Column("tampered", sa.Boolean, nullable=False),
        sa.Column("revoked_at", TIME, nullable=True),
    )
    op.create_table(
        "flow_batches",
        sa.Column("seq", SERIAL, primary_key=True, autoincrement=True),
        sa.Column("agent_id", sa.String(32), nullable=False),
        sa.Column("batch_id", sa.String(100), nullable=False),
        sa.Column("workload", sa.String(300), nullable=False),
        sa.Column("received_at", TIME, nullable=False),
        sa.Column("first_seen", TIME, nullable=False),
        sa.Column("last_seen", TIME, nullable=False),
        sa.Column("records", sa.Integer, nullable=False),
        sa.Column("blocked", sa.Integer, nullable=False),
        sa.Column("would_block", sa.Integer, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.UniqueConstraint("agent_id", "batch_id", name="uq_flow_batches_agent_batch"),
    )
    if op.get_bind().dialect.name == "postgresql":
        # lz4 compresses a batch's JSON twice as fast as the default pglz; skipped where unavailable.
        op.execute(
            "DO $$ BEGIN ALTER TABLE flow_batches ALTER COLUMN data SET COMPRESSION lz4; "
            "EXCEPTION WHEN OTHERS THEN NULL; END $$"
        )
    op.create_index("ix_flow_batches_workload", "flow_batches", ["workload", "last_seen"])
    op.create_index("ix_flow_batches_last_seen", "flow_batches", ["last_seen"])
    op.create_table(
        "events",
        sa.Column("id", SERIAL, primary_key=True, autoincrement=True),
        sa.Column("at", TIME, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("workload", sa.String(300), nullable=True),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("details", JSON, nullable=False),
    )
    op.create_index("ix_events_at", "events", ["at"])


def _append_only(table: str) -> None:
    """Refuse UPDATE, DELETE (and on PostgreSQL TRUNCATE) of `table` in the database itself."""
    if op.get_bind().dialect.name == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )
        return
    op.execute(
        f"CREATE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN RAISE EXCEPTION '{table} is append-only'; END $$"
    )
    op.execute(
        f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()"
    )
    op.execute(
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_append_only()"
    )


def downgrade() -> None:
    for table in ("events", "flow_batches", "agents", "enrollment_tokens", "api_tokens"):
        op.drop_table(table)
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP TRIGGER audit_append_only ON audit")
        op.execute("DROP TRIGGER audit_no_truncate ON audit")
        op.execute("DROP FUNCTION audit_append_only()")
    for table in ("audit", "versions", "state", "objects"):
        op.drop_table(table)

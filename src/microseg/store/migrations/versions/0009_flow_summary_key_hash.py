"""Flow summaries unique by the digest of their key: the column `key_hash` (16 bytes; a uuid on
PostgreSQL), filled for the rows stored before, with a unique constraint on it in place of the
ten-column `uq_flow_summaries_key`. The ingest upsert then finds its row through one small index
entry: cheaper probes and inserts, and fewer index pages written per batch.

Cost: every stored summary row is read and rewritten once (in chunks, by id).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

KEY = ("bucket", "reporter", "direction", "src", "dst", "dport", "proto", "process", "verdict", "rule")
KEY_HASH = sa.LargeBinary(16).with_variant(postgresql.UUID(as_uuid=False), "postgresql")
CHUNK = 5000
"""Rows read and rewritten per round."""


def upgrade() -> None:
    conn = op.get_bind()
    op.add_column("flow_summaries", sa.Column("key_hash", KEY_HASH, nullable=True))
    table = sa.table("flow_summaries", sa.column("id", sa.Integer), sa.column("key_hash", KEY_HASH),
                     *(sa.column(c) for c in KEY))  # fmt: skip
    postgres = conn.dialect.name == "postgresql"
    after = -1
    while True:
        chunk = conn.execute(
            sa.select(table.c.id, *(table.c[c] for c in KEY))
            .where(table.c.id > after)
            .order_by(table.c.id)
            .limit(CHUNK)
        ).all()
        if not chunk:
            break
        rows = [{"ident": row[0], "digest": _digest(row[1:], postgres)} for row in chunk]
        conn.execute(
            sa.update(table)
            .where(table.c.id == sa.bindparam("ident"))
            .values(key_hash=sa.bindparam("digest")),
            rows,
        )
        after = chunk[-1][0]
    with op.batch_alter_table("flow_summaries") as batch:
        batch.alter_column("key_hash", existing_type=KEY_HASH, nullable=False)
        batch.drop_constraint("uq_flow_summaries_key", type_="unique")
        batch.create_unique_constraint("uq_flow_summaries_key_hash", ["key_hash"])


def _digest(key: Sequence[Any], postgres: bool) -> Any:
    """`summaries.key_hash` as it is at this revision (frozen here: the stored digests must keep
    meaning what they meant when written)."""
    bucket, reporter, direction, src, dst, dport, proto, process, verdict, rule = key
    text = (
        f"{float(bucket)!r}|{dport}|{len(reporter)}:{reporter}|{len(direction)}:{direction}|"
        f"{len(src)}:{src}|{len(dst)}:{dst}|{len(proto)}:{proto}|{len(process)}:{process}|"
        f"{len(verdict)}:{verdict}|{len(rule)}:{rule}"
    )
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return digest.hex() if postgres else digest


def downgrade() -> None:
    with op.batch_alter_table("flow_summaries") as batch:
        batch.drop_constraint("uq_flow_summaries_key_hash", type_="unique")
        batch.create_unique_constraint("uq_flow_summaries_key", list(KEY))
        batch.drop_column("key_hash")

"""The one state row: the active policy version and the inventory generation.

Every replica compares this pair with what its compiled engine was built from; a change means
"rebuild and wake the agents that long-poll". Writers bump it in the transaction that changes
the inventory or provisions, so readers never see a change without its new generation.
"""

from __future__ import annotations

import sqlalchemy as sa

from microseg.store import schema

T = schema.state


def read(conn: sa.Connection) -> tuple[int, int]:
    """(active version, inventory generation)."""
    row = conn.execute(sa.select(T.c.active_version, T.c.inventory_generation).where(T.c.id == 1)).one()
    return int(row[0]), int(row[1])


def bump_inventory(conn: sa.Connection) -> None:
    """The inventory changed (a workload, label rule or mode scope)."""
    conn.execute(sa.update(T).where(T.c.id == 1).values(inventory_generation=T.c.inventory_generation + 1))


def set_active(conn: sa.Connection, version: int) -> None:
    """A version was provisioned."""
    conn.execute(sa.update(T).where(T.c.id == 1).values(active_version=version))

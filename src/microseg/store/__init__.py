"""The control plane's storage: SQLAlchemy Core tables, Alembic migrations, SQLite or PostgreSQL.

Fed by the server (one transaction per request); feeds nothing above but rows. `schema` holds the
tables, `database` the engine with its per-dialect settings (SQLite WAL and immediate write
transactions, PostgreSQL advisory locks), `migrate` runs Alembic, and one module per concern holds
its queries (objects, versions, audit, tokens, agents, flows, events).

What it deliberately does not do: understand policy. Objects are stored as the policy-file
documents they are; turning them into an estate is the server's job.
"""

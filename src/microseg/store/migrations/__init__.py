"""Alembic scripts of the control-plane store (see `microseg.store.migrate`)."""

"""Alembic environment: runs on the connection :func:`aurora.migrations.upgrade` hands it."""

from __future__ import annotations

from alembic import context

from aurora.models import Base, describe_partial_indexes

connection = context.config.attributes["connection"]
describe_partial_indexes(connection.dialect.name)  # what Alembic compares the database with
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

"""run id prefixes: an index PostgreSQL can use for ``id LIKE 'prefix%'`` in any collation

Revision ID: 0012_cli
Revises: 0011_fedtrust
"""

from __future__ import annotations

from alembic import op

revision = "0012_cli"
down_revision = "0011_fedtrust"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite compares text bytewise, so its unique index on runs.id serves a range lookup as it
    # is; PostgreSQL's default index follows the database's collation, which LIKE cannot use.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE INDEX ix_runs_id_prefix ON runs (id text_pattern_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_runs_id_prefix")

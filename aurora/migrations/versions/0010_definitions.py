"""definitions: stored, versioned workflows and what their runs came from

Revision ID: 0010_definitions
Revises: 0009_steps
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from aurora.models import UTCDateTime

revision = "0010_definitions"
down_revision = "0009_steps"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "definitions",
        sa.Column("name", sa.String(length=128), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("webhook_secret", sa.Text(), nullable=True),
        sa.Column("schedule_checked_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "definition_versions",
        sa.Column("pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("name", "version", name="uq_definition_versions_name_version"),
    )
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("definition", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("definition_version", sa.Integer(), nullable=True))
    op.create_index("ix_runs_definition_pk", "runs", ["definition", "pk"])


def downgrade() -> None:
    op.drop_index("ix_runs_definition_pk", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("definition_version")
        batch.drop_column("definition")
    op.drop_table("definition_versions")
    op.drop_table("definitions")

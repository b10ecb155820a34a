"""webhooks: receipts, external references, charge settlement

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from aurora.models import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "external_refs",
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("ref", sa.String(length=255), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("provider", "ref"),
    )
    op.create_index("ix_external_refs_run_id", "external_refs", ["run_id"])
    op.create_table(
        "webhook_receipts",
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=True),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("provider", "external_id"),
    )
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("settlement", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("settlement")
    op.drop_table("webhook_receipts")
    op.drop_index("ix_external_refs_run_id", table_name="external_refs")
    op.drop_table("external_refs")

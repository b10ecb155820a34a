"""adapter rollout state (canary, rollback) and Typeform cursors

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from aurora.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "adapter_states",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("promoted", sa.Boolean(), nullable=False),
        sa.Column("rolled_back_at", UTCDateTime(), nullable=True),
        sa.Column("rollback_reason", sa.String(length=255), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "form_cursors",
        sa.Column("form_id", sa.String(length=64), nullable=False),
        sa.Column("after", sa.String(length=128), nullable=True),
        sa.Column("ingested", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("form_id"),
    )


def downgrade() -> None:
    op.drop_table("form_cursors")
    op.drop_table("adapter_states")

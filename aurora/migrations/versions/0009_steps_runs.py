"""steps: a workflow of several steps is a parent run; each step is a child run of it

Revision ID: 0009_steps
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_steps"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("parent_id", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("step_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("step_attempt", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("inputs", sa.JSON(), nullable=True))
    # One child run per step attempt: two workers advancing the same workflow at once create it once.
    op.create_index("ux_runs_parent_step", "runs", ["parent_id", "step_id", "step_attempt"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_runs_parent_step", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("inputs")
        batch.drop_column("step_attempt")
        batch.drop_column("step_id")
        batch.drop_column("parent_id")

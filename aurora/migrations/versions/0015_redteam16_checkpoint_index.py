"""witnesses find an origin's stored audit checkpoints by its seq: a partial index

A witness that receives an origin's checkpoints out of order (a diamond of relays, or a relay
holding one back) checks the missing links among the checkpoints it stored
(aurora/federation/witness.py). The index holds checkpoint rows only, so storing any other event
costs nothing more.

Revision ID: 0015_redteam16
Revises: 0014_bytes
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_redteam16"
down_revision = "0014_bytes"
branch_labels = None
depends_on = None

WHERE = sa.text("type = 'audit.checkpoint'")


def upgrade() -> None:
    op.create_index("ix_events_checkpoints", "events", ["origin", "origin_seq"],
                    postgresql_where=WHERE, sqlite_where=WHERE)


def downgrade() -> None:
    op.drop_index("ix_events_checkpoints", table_name="events")

"""signed federation: events keep their origin's seq and signature, pinned and introduced origin
keys, the audit checkpoints this node witnesses for others, refusals per peer, longer (encrypted)
peer tokens

Revision ID: 0011_fedtrust
Revises: 0010_definitions
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from aurora.models import UTCDateTime

revision = "0011_fedtrust"
down_revision = "0010_definitions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("origin_seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("signature", sa.String(length=88), nullable=True))
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("rejected", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("last_rejection", sa.String(length=255), nullable=True))
    if op.get_bind().dialect.name == "postgresql":  # SQLite does not enforce VARCHAR lengths
        # an encrypted token is longer than the token itself
        op.alter_column("nodes", "token", type_=sa.String(length=1024), existing_type=sa.String(length=256))
    op.create_table(
        "federation_keys",
        sa.Column("origin", sa.String(length=64), primary_key=True),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("introduced_by", sa.String(length=64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "witness_checkpoints",
        sa.Column("origin", sa.String(length=64), primary_key=True),
        sa.Column("origin_seq", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("head_pk", sa.BigInteger(), nullable=True),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.Column("event", sa.JSON(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("problem", sa.String(length=512), nullable=True),
        sa.Column("problem_at", UTCDateTime(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("witness_checkpoints")
    op.drop_table("federation_keys")
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("last_rejection")
        batch.drop_column("rejected")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("signature")
        batch.drop_column("origin_seq")

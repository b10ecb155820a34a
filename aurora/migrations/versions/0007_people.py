"""people: keys belong to people; votes bound to the rendered request and its mode

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from aurora.models import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "people",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("removed_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("person", sa.String(length=64), nullable=True))
        batch.create_index("ix_api_keys_person", ["person"])
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("submitted_by_person", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("approval_binding", sa.JSON(), nullable=True))
    # A key may vote again when the request it approved changed, with the same document: the
    # uniqueness moves from the document to the rendered request.
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("person", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("request_hash", sa.String(length=64), nullable=True))
        batch.drop_constraint("uq_approvals_vote", type_="unique")
        batch.create_unique_constraint("uq_approvals_key_request", ["run_id", "voter", "request_hash"])
    # Every existing key becomes a person of its own (the name it had), with its role; every run
    # and vote is that key's person's. Old votes keep request_hash NULL: they were bound to the
    # document only, so they never count (a waiting run asks its approvers again).
    op.execute("INSERT INTO people (name, role, created_at, removed_at) "
               "SELECT name, role, created_at, revoked_at FROM api_keys")
    op.execute("UPDATE api_keys SET person = name")
    op.execute("UPDATE runs SET submitted_by_person = submitted_by")
    op.execute("UPDATE approvals SET person = voter")
    # A run waiting for votes has no rendered request yet: back to the queue, so that a worker
    # renders it, stops it at its gate again and asks its approvers (the sweeper sends it).
    op.execute("UPDATE runs SET status = 'queued' WHERE status = 'awaiting_approval'")


def downgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.drop_constraint("uq_approvals_key_request", type_="unique")
        batch.drop_column("request_hash")
        batch.drop_column("person")
        batch.create_unique_constraint("uq_approvals_vote", ["run_id", "voter", "document_hash"])
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("approval_binding")
        batch.drop_column("submitted_by_person")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_index("ix_api_keys_person")
        batch.drop_column("person")
    op.drop_table("people")

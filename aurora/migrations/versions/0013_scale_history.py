"""history that stays cheap to read: metric tallies and archived runs

``metric_tallies`` holds the counts /metrics would otherwise take with ``count(*)`` over every run
and audit record ever stored (aurora/tallies.py); they are taken here once, from what is stored.
``runs.archive`` names the archive a pruned run's document, steps and events went to
(aurora/prune.py).

Revision ID: 0013_scale
Revises: 0012_cli
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_scale"
down_revision = "0012_cli"
branch_labels = None
depends_on = None

#: statuses a run keeps for good (a needs_reconciliation run may still settle: it is counted live)
SETTLED = ("succeeded", "failed", "rejected", "expired", "cancelled", "not_acted")


def upgrade() -> None:
    op.add_column("runs", sa.Column("archive", sa.String(length=512), nullable=True))
    tallies = op.create_table(
        "metric_tallies",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("labels", sa.String(length=255), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", "labels"),
    )
    bind = op.get_bind()
    rows = [{"name": "runs", "labels": f"{goal}\t{status}", "count": count} for goal, status, count in bind.execute(
        sa.text("SELECT goal, status, count(*) FROM runs WHERE status IN :settled GROUP BY goal, status")
        .bindparams(sa.bindparam("settled", expanding=True)), {"settled": list(SETTLED)})]
    rows += [{"name": "calls", "labels": f"{adapter}\t{mode}\t{outcome}", "count": count}
             for adapter, mode, outcome, count in bind.execute(sa.text(
                 "SELECT adapter, mode, outcome, count(*) FROM audit_records WHERE mode <> 'ledger' "
                 "GROUP BY adapter, mode, outcome"))]
    rows.append({"name": "_seq", "labels": "", "count": bind.execute(
        sa.text("SELECT coalesce(max(seq), 0) FROM events")).scalar()})
    rows.append({"name": "_audit", "labels": "", "count": bind.execute(
        sa.text("SELECT coalesce(max(pk), 0) FROM audit_records")).scalar()})
    op.bulk_insert(tallies, rows)


def downgrade() -> None:
    op.drop_table("metric_tallies")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("archive")

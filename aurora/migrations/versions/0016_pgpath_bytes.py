"""fewer bytes per run, again: one index for run ids, none of a run's events by origin, steps keyed by run

- PostgreSQL held each run id twice more than it needed: in ``runs_id_key`` (the unique
  constraint, in the database's collation) and in ``ix_runs_id_prefix`` (``text_pattern_ops``, for
  ``id LIKE 'prefix%'``, migration 0012_cli). A ``text_pattern_ops`` index serves ``=`` as well, so
  one unique index of that kind, ``ux_runs_id``, does both (and backs the approvals' foreign key).
  SQLite compares text bytewise: its unique index did both already and stays.
- ``events (origin, seq)`` had an entry for every event, though a run's events are found by
  ``run_pk`` and the reads by origin (``GET /events?origin=``, the nodes page, the checkpoint just
  written) look for another node's events or this node's events of no run. It holds only the
  events without ``run_pk`` now (``ix_events_origin_seq_runless``): a peer's events, and this
  node's checkpoints and form responses; the reads say ``run_pk IS NULL``, which is exact for them.
- ``run_steps`` had a surrogate ``pk`` beside the unique ``(run_pk, step)`` it is found by: the
  pair is the primary key now, and ``pk`` (and its index) are gone. On SQLite the table is copied
  (``pk`` was its rowid there, so this saves nothing on SQLite but keeps one schema).

Revision ID: 0016_pgpath
Revises: 0015_redteam16
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_pgpath"
down_revision = "0015_redteam16"
branch_labels = None
depends_on = None

RUNLESS = "run_pk IS NULL"


def _where(bind: sa.Connection, condition: str) -> dict[str, sa.TextClause]:
    return {f"{bind.dialect.name}_where": sa.text(condition)}


def _approvals_fk() -> None:
    op.execute("ALTER TABLE approvals ADD CONSTRAINT approvals_run_id_fkey FOREIGN KEY (run_id) "
               "REFERENCES runs (id) ON DELETE CASCADE")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("CREATE UNIQUE INDEX ux_runs_id ON runs (id text_pattern_ops)")
        # the foreign key depends on the constraint's index: made again, it finds the new one
        op.execute("ALTER TABLE approvals DROP CONSTRAINT approvals_run_id_fkey")
        op.execute("ALTER TABLE runs DROP CONSTRAINT runs_id_key")
        op.execute("DROP INDEX ix_runs_id_prefix")
        _approvals_fk()

    op.drop_index("ix_events_origin_seq", table_name="events")
    op.create_index("ix_events_origin_seq_runless", "events", ["origin", "seq"], **_where(bind, RUNLESS))

    if bind.dialect.name == "postgresql":
        op.execute("ALTER TABLE run_steps DROP CONSTRAINT run_steps_pkey")
        op.execute("ALTER TABLE run_steps DROP COLUMN pk")
        op.execute("ALTER TABLE run_steps DROP CONSTRAINT uq_run_steps_run_step")
        op.execute("ALTER TABLE run_steps ADD CONSTRAINT run_steps_pkey PRIMARY KEY (run_pk, step)")
    else:
        with op.batch_alter_table("run_steps", recreate="always") as batch:
            batch.drop_constraint("uq_run_steps_run_step", type_="unique")
            batch.drop_column("pk")
            batch.create_primary_key("run_steps_pkey", ["run_pk", "step"])


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("ALTER TABLE run_steps DROP CONSTRAINT run_steps_pkey")
        op.execute("ALTER TABLE run_steps ADD CONSTRAINT uq_run_steps_run_step UNIQUE (run_pk, step)")
        op.execute("ALTER TABLE run_steps ADD COLUMN pk BIGSERIAL PRIMARY KEY")
    else:
        with op.batch_alter_table("run_steps", recreate="always") as batch:
            batch.drop_constraint("run_steps_pkey", type_="primary")
            batch.add_column(sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True))
            batch.create_unique_constraint("uq_run_steps_run_step", ["run_pk", "step"])

    op.drop_index("ix_events_origin_seq_runless", table_name="events")
    op.create_index("ix_events_origin_seq", "events", ["origin", "seq"])

    if bind.dialect.name == "postgresql":
        op.execute("CREATE INDEX ix_runs_id_prefix ON runs (id text_pattern_ops)")
        op.execute("ALTER TABLE approvals DROP CONSTRAINT approvals_run_id_fkey")
        op.execute("ALTER TABLE runs ADD CONSTRAINT runs_id_key UNIQUE (id)")
        op.execute("DROP INDEX ux_runs_id")
        _approvals_fk()

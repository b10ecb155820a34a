"""fewer bytes per run: steps name their run by its pk; unique indexes only where something can collide

- ``run_steps`` named its run by the run's id (36 characters, in each row and its unique index,
  three times a run); it names it by ``runs.pk`` now (``run_pk``).
- ``events`` were found by ``run_id`` in an index of 36-character keys; this node's events of its
  own runs now also carry the run's ``pk`` (``run_pk``; a foreign event has none), and the index
  is on that, for those events only. ``run_id`` stays as it was: it is what peers see.
- ``events (origin, id)`` was unique over every event. Only two kinds of id can ever meet again: a
  foreign event pulled twice (``origin_seq`` is set on every foreign event since 0011) and a
  Typeform response, whose id is derived from the response (``typeform.response``). Every other
  event this node appends has a random UUID. The index now holds those two kinds, and every event
  stored before this migration (``seq`` up to the last one now: foreign events pulled before
  0011 have no ``origin_seq``), instead of three entries per run.
- ``audit_records.hash`` was unique. Each hash is an HMAC over the previous hash and the
  record: two equal hashes would be an HMAC collision, and ``aurora audit verify`` walks the
  chain by ``pk``, never by hash. The index guarded nothing and cost a sixth of a dry run's
  audit bytes.
- ``runs (definition, pk)`` and ``runs (parent_id, step_id, step_attempt)`` held an entry for
  every run, though only runs started from a stored definition, or steps of a workflow, have
  those columns. Both are partial now (``… IS NOT NULL``); the lookups compare the column with a
  value, which implies it, so they use the same index.

On SQLite dropping a table's constraint copies the table (``run_steps``, ``events``,
``audit_records``): the rows are copied as they are, so the audit chain verifies as before.

Revision ID: 0014_bytes
Revises: 0013_scale
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_bytes"
down_revision = "0013_scale"
branch_labels = None
depends_on = None

#: the events whose ids can collide (see the docstring); ``{last}`` is the last seq before 0014
EVENTS_UNIQUE_WHERE = "origin_seq IS NOT NULL OR type = 'typeform.response' OR seq <= {last}"


def _where(bind: sa.Connection, condition: str) -> dict[str, sa.TextClause]:
    return {f"{bind.dialect.name}_where": sa.text(condition)}


#: names for the constraints SQLite keeps unnamed (PostgreSQL named them itself)
CONVENTION = {"uq": "uq_%(table_name)s_%(column_0_name)s",
              "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    with op.batch_alter_table("run_steps") as batch:
        batch.add_column(sa.Column("run_pk", sa.BigInteger(), nullable=True))
    op.execute("UPDATE run_steps SET run_pk = (SELECT runs.pk FROM runs WHERE runs.id = run_steps.run_id)")
    with op.batch_alter_table("run_steps", naming_convention=CONVENTION) as batch:
        batch.drop_constraint("uq_run_steps_run_step", type_="unique")
        batch.drop_constraint("fk_run_steps_run_id_runs" if sqlite else "run_steps_run_id_fkey", type_="foreignkey")
        batch.drop_column("run_id")
        batch.alter_column("run_pk", existing_type=sa.BigInteger(), nullable=False)
        batch.create_foreign_key("fk_run_steps_run_pk_runs", "runs", ["run_pk"], ["pk"], ondelete="CASCADE")
        batch.create_unique_constraint("uq_run_steps_run_step", ["run_pk", "step"])

    last = int(bind.execute(sa.text("SELECT coalesce(max(seq), 0) FROM events")).scalar())
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("run_pk", sa.BigInteger(), nullable=True))
    # a peer's event never names a run of this node (its ids are the peer's): it gets none
    op.execute("UPDATE events SET run_pk = (SELECT runs.pk FROM runs WHERE runs.id = events.run_id) "
               "WHERE run_id IS NOT NULL")
    op.drop_index("ix_events_run_id", table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.drop_constraint("uq_events_origin_id", type_="unique")
    op.create_index("ix_events_run_pk", "events", ["run_pk"], **_where(bind, "run_pk IS NOT NULL"))
    op.create_index("ux_events_origin_id", "events", ["origin", "id"], unique=True,
                    **_where(bind, EVENTS_UNIQUE_WHERE.format(last=last)))

    with op.batch_alter_table("audit_records", naming_convention=CONVENTION) as batch:
        batch.drop_constraint("uq_audit_records_hash" if sqlite else "audit_records_hash_key", type_="unique")

    op.drop_index("ix_runs_definition_pk", table_name="runs")
    op.create_index("ix_runs_definition_pk", "runs", ["definition", "pk"], **_where(bind, "definition IS NOT NULL"))
    op.drop_index("ux_runs_parent_step", table_name="runs")
    op.create_index("ux_runs_parent_step", "runs", ["parent_id", "step_id", "step_attempt"], unique=True,
                    **_where(bind, "parent_id IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ux_runs_parent_step", table_name="runs")
    op.create_index("ux_runs_parent_step", "runs", ["parent_id", "step_id", "step_attempt"], unique=True)
    op.drop_index("ix_runs_definition_pk", table_name="runs")
    op.create_index("ix_runs_definition_pk", "runs", ["definition", "pk"])
    with op.batch_alter_table("audit_records") as batch:
        batch.create_unique_constraint("audit_records_hash_key", ["hash"])
    op.drop_index("ux_events_origin_id", table_name="events")
    op.drop_index("ix_events_run_pk", table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.create_unique_constraint("uq_events_origin_id", ["origin", "id"])
        batch.drop_column("run_pk")
    op.create_index("ix_events_run_id", "events", ["run_id"])
    with op.batch_alter_table("run_steps") as batch:
        batch.add_column(sa.Column("run_id", sa.String(length=36), nullable=True))
    op.execute("UPDATE run_steps SET run_id = (SELECT runs.id FROM runs WHERE runs.pk = run_steps.run_pk)")
    with op.batch_alter_table("run_steps") as batch:
        batch.drop_constraint("uq_run_steps_run_step", type_="unique")
        batch.drop_constraint("fk_run_steps_run_pk_runs", type_="foreignkey")
        batch.drop_column("run_pk")
        batch.alter_column("run_id", existing_type=sa.String(length=36), nullable=False)
        batch.create_foreign_key("run_steps_run_id_fkey", "runs", ["run_id"], ["id"], ondelete="CASCADE")
        batch.create_unique_constraint("uq_run_steps_run_step", ["run_id", "step"])

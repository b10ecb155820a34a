"""Statements on runs and their steps, each built once per process.

Building a SQLAlchemy statement and its cache key costs about three times as much as executing
it (measured here: ~240 µs against ~60 µs for an UPDATE on SQLite), and every run executes about
ten of them. So the statements of the run path are built once, with bind parameters, and only
executed per run. Conditions a transition may add are named, so that their statements can be
cached too.
"""

from __future__ import annotations

from functools import cache

from sqlalchemy import Update, and_, bindparam, func, or_, select, update

from .dbclock import db_later, db_now
from .models import Run, RunStatus, RunStep, UTCDateTime

RUNS = Run.__table__
STEPS = RunStep.__table__
NOW = bindparam("now", type_=UTCDateTime())

INSERT_RUN = RUNS.insert()
INSERT_STEPS = STEPS.insert().inline()  # the key is given: nothing to read back (Database.batch)

#: take a queued run, or a running one whose lease lapsed; the step is "act" from here on. The
#: lease is on the database's clock (``aurora.dbclock``): a worker's own clock may be skewed.
CLAIM = update(RUNS).where(
    RUNS.c.id == bindparam("rid"),
    or_(RUNS.c.status == RunStatus.QUEUED.value,
        and_(RUNS.c.status == RunStatus.RUNNING.value, RUNS.c.lease_expires_at < db_now())),
).values(
    status=RunStatus.RUNNING.value, lease_owner=bindparam("owner"), step="act",
    lease_expires_at=db_later(bindparam("lease")), attempts=RUNS.c.attempts + 1,
    started_at=func.coalesce(RUNS.c.started_at, NOW), updated_at=NOW,
    error=None,  # a run blocked before (aurora.blocking) is no longer
).returning(*RUNS.c)

#: a run's steps (steps name their run by its pk)
STEPS_OF = select(STEPS).where(STEPS.c.run_pk == bindparam("rpk"))

#: change a step an earlier attempt left behind
UPDATE_STEP = update(STEPS).where(STEPS.c.run_pk == bindparam("rpk"), STEPS.c.step == bindparam("sname")).values(
    status=bindparam("v_status"), result=bindparam("v_result"), attempt=bindparam("v_attempt"),
    finished_at=bindparam("v_finished_at", type_=UTCDateTime()),
)

#: extra conditions a transition may name; their parameters start with ``w_``
CONDITIONS = {
    "owned": RUNS.c.lease_owner == bindparam("w_owner"),
    "not_acting": or_(RUNS.c.step.is_(None), RUNS.c.step != "act"),
    "lease_lapsed": RUNS.c.lease_expires_at < db_now(),
    "gate_overdue": RUNS.c.gate_deadline < bindparam("w_before", type_=UTCDateTime()),
}


@cache
def transition(from_statuses: tuple[str, ...], to: str, fields: tuple[str, ...], where: str | None) -> Update:
    """``UPDATE runs SET status = to, updated_at = :now, <field> = :v_<field> ... WHERE id = :rid
    AND status IN from_statuses [AND <condition>]``."""
    condition = and_(RUNS.c.id == bindparam("rid"), RUNS.c.status.in_(from_statuses))
    if where is not None:
        condition = and_(condition, CONDITIONS[where])
    values = {name: bindparam(f"v_{name}") for name in fields}
    return update(RUNS).where(condition).values(status=to, updated_at=NOW, **values)

#: a run no worker has claimed yet: its plan can be worked out before the write transaction
FRESH = select(RUNS.c.pk, RUNS.c.id, RUNS.c.goal, RUNS.c.document, RUNS.c.document_hash, RUNS.c.attempts,
               RUNS.c.created_at, RUNS.c.parent_id).where(RUNS.c.id == bindparam("rid"), RUNS.c.status == RunStatus.QUEUED.value,
                           RUNS.c.attempts == 0, RUNS.c.started_at.is_(None))

#: renew the leases this process holds (one owner each), on the database's clock
RENEW = update(RUNS).where(RUNS.c.id == bindparam("rid"), RUNS.c.lease_owner == bindparam("owner"),
                           RUNS.c.status == RunStatus.RUNNING.value).values(lease_expires_at=db_later(bindparam("lease")))

#: running runs whose lease lapsed, by the database's clock
LAPSED = select(RUNS.c.id).where(RUNS.c.status == RunStatus.RUNNING.value, RUNS.c.lease_expires_at < db_now())

#: a fresh run whose simulated outcome was worked out ahead goes from queued to final at once
SETTLE_FRESH = update(RUNS).where(
    RUNS.c.id == bindparam("rid"), RUNS.c.status == RunStatus.QUEUED.value, RUNS.c.attempts == 0,
    RUNS.c.started_at.is_(None),
).values(
    status=bindparam("v_status"), attempts=1, step="act", started_at=NOW, finished_at=NOW, updated_at=NOW,
    result=bindparam("v_result"), error=bindparam("v_error"),
)

#: does this worker still hold the run? (On PostgreSQL it also locks the row until the finish
#: commits; SQLite's writer already holds the database.)
STILL_OWNED = update(RUNS).where(
    RUNS.c.id == bindparam("rid"), RUNS.c.status == RunStatus.RUNNING.value, RUNS.c.lease_owner == bindparam("owner"),
).values(lease_owner=bindparam("owner"))

#: keep a live call's outcome on its act step, for the attempt that finishes the run
KEEP_OUTCOME = update(STEPS).where(
    STEPS.c.run_pk == bindparam("rpk"), STEPS.c.step == "act", STEPS.c.status == "started",
).values(result=bindparam("v_result"))

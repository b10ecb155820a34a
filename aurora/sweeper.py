"""The sweeper: what beat's sweep (on the system queue) does to keep every run moving.

Reclaims runs whose lease lapsed (by the database's clock), sends again the runs whose message
was lost, and expires approval gates past their deadline. ``Engine.sweep`` calls it; the caller
(``aurora.tasks.sweep``) asks the broker how many run messages wait and enqueues what it returns.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from . import events, run_sql
from .dbclock import db_now
from .models import Event, Run, RunStatus, utcnow

if TYPE_CHECKING:
    from .engine import Engine

#: the most lost messages one sweep sends again
RESEND_BATCH = 1000
#: a run whose message was lost this many times is failed instead of sent again: a run that kills
#: its worker before the claim commits (a poison run) would otherwise be resent forever
MAX_RESENDS = 5
#: the reason of a resend's ``run.requeued`` event
RESENT = "its message was lost: sent again"


def sweep(engine: Engine, waiting: int | None = None) -> list[str]:
    """Reclaim lapsed leases, resend lost messages, expire overdue gates; return the run ids
    to enqueue again. ``waiting`` is the number of messages the broker holds for the run
    queue (None when it cannot tell).

    The candidates are found in a read, without the writer's turn (on SQLite every worker
    waits for that turn, and a backlog makes the search longer); the writes that follow are
    compare-and-sets, so whatever moved in between is left alone.
    """
    with engine.db.read() as session:
        # The database's clock, as for leases: a system worker whose clock runs days fast must
        # not expire gates, nor one that runs slow keep lost runs waiting (aurora/dbclock.py).
        now = session.scalar(select(db_now())) or utcnow()
        # Lapsed by the database's clock, not this process's (aurora/dbclock.py).
        lapsed = session.execute(run_sql.LAPSED).scalars().all()
        lost = _lost_messages(engine, session, waiting, now)
        overdue = session.scalars(select(Run.id).where(
            Run.status == RunStatus.AWAITING_APPROVAL.value, Run.gate_deadline < now)).all()
    again: list[str] = []
    if not (lapsed or lost or overdue):
        return again
    with engine.db.write() as session:
        for run_id in lapsed:
            if engine.transition(session, run_id, (RunStatus.RUNNING,), RunStatus.QUEUED,
                                 {"reason": "lease lapsed: the worker stopped"}, where="lease_lapsed",
                                 lease_owner=None, lease_expires_at=None, enqueued_at=now):
                again.append(run_id)
        for run_id, enqueued_at in lost:
            # A blocked run was seen by a worker each time (aurora.blocking): it waits for its
            # cause to be fixed, it does not kill workers; it is sent again however often.
            if _resends(session, run_id, engine.node) >= MAX_RESENDS and not _blocked(session, run_id):
                engine.transition(session, run_id, (RunStatus.QUEUED,), RunStatus.FAILED,
                                  {"error": "lost_too_often"}, error={
                                      "type": "lost_too_often", "message":
                                      f"its message was lost {MAX_RESENDS} times without the run being claimed: "
                                      "a worker may die on it; see the worker logs before submitting it again"})
                continue
            resent = session.execute(update(Run).where(
                Run.id == run_id, Run.status == RunStatus.QUEUED.value,
                Run.enqueued_at.is_(None) if enqueued_at is None else Run.enqueued_at == enqueued_at,
            ).values(enqueued_at=now)).rowcount
            if resent:
                events.append(engine.db, session, engine.node, "run.requeued", {"reason": RESENT},
                              run_id=run_id, at=now)
                again.append(run_id)
        for run_id in overdue:
            engine.transition(session, run_id, (RunStatus.AWAITING_APPROVAL,), RunStatus.EXPIRED,
                              {"reason": "approval deadline passed"}, where="gate_overdue",
                              where_params={"w_before": now})
    return again


def _blocked(session: Session, run_id: str) -> bool:
    error = session.scalar(select(Run.error).where(Run.id == run_id)) or {}
    return error.get("type") == "blocked"


def _resends(session: Session, run_id: str, node: str) -> int:
    # only this node's own events: a peer's event about the same run id is never this run's
    return sum(1 for data in session.scalars(select(Event.data).where(
        events.of_run(run_id), Event.origin == node, Event.type == "run.requeued"))
        if (data or {}).get("reason") == RESENT)


def _lost_messages(engine: Engine, session: Session, waiting: int | None, now: datetime,
                   ) -> list[tuple[str, datetime | None]]:
    """Queued runs whose message is no longer in the broker, though no worker claimed them.

    The broker hands out messages first in, first out, so the ``waiting`` messages it still
    holds are those of the ``waiting`` most recently enqueued runs. A queued run older than
    those, and enqueued more than ``requeue_after`` seconds ago, had its message taken by a
    worker that died before claiming it, or lost with the broker's data, or never sent
    (broker down at submit). A backlog is never resent: its messages are all waiting. The
    estimate errs towards waiting: a duplicate still in the broker counts as waiting, and a
    message a busy worker holds in its prefetch is sent once more at worst, harmlessly (the
    claim is a compare-and-set).
    """
    if waiting is None:
        return []
    stale = now - timedelta(seconds=engine.settings.requeue_after)
    queued = session.execute(
        select(Run.id, Run.enqueued_at).where(Run.status == RunStatus.QUEUED.value)
        .order_by(Run.enqueued_at.desc(), Run.pk.desc()).offset(waiting).limit(RESEND_BATCH)).all()
    # A time in the future is a deferred run's not-before time (aurora.deferral): it waits for it.
    return [(row.id, row.enqueued_at) for row in queued if row.enqueued_at is None or row.enqueued_at < stale]

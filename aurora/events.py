"""The outbox: every state change appends an event in the same transaction as the change.

Events are numbered by a local, monotonic ``seq``. On PostgreSQL, appends take an advisory lock
so sequence numbers become visible in the order they were handed out: a peer that has read up
to ``seq`` N never later finds an event below N appear.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from . import changes
from .db import EVENT_LOCK_KEY as EVENT_LOCK_KEY  # its home was here
from .db import OUTBOX_LOCKS, Database, connection_of
from .models import Event, Run, utcnow

_RUNS = Run.__table__
#: an event of one of this node's runs names the run by its pk too (``Event.run_pk``), looked up
#: in the insert itself: no caller needs to know it. Inline: nobody reads the new ``seq`` back,
#: so not even a one-event INSERT has a ``RETURNING`` (and each may run in ``Database.batch``)
_INSERT = Event.__table__.insert().inline().values(
    run_pk=select(_RUNS.c.pk).where(_RUNS.c.id == bindparam("run_of")).scalar_subquery())


def append(
    db: Database,
    session: Session | Connection,
    origin: str,
    type_: str,
    data: dict[str, Any],
    run_id: str | None = None,
    at: datetime | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """Add one event to the session's transaction (it commits or rolls back with it)."""
    values = _values(origin, type_, data, run_id, at or utcnow(), event_id)
    _insert(db, session, values)
    changes.note(run_id, type_)
    return values


def append_many(db: Database, session: Session | Connection, origin: str, items: list[tuple[str, dict[str, Any]]],
                run_id: str | None = None, at: datetime | None = None) -> None:
    """Add several events of one run, in order, with one statement."""
    at = at or utcnow()
    _insert(db, session, [_values(origin, type_, data, run_id, at) for type_, data in items])
    for type_, _data in items:
        changes.note(run_id, type_)


def append_batch(db: Database, session: Session | Connection, origin: str,
                 items: list[tuple[str, dict[str, Any], str | None]], at: datetime | None = None) -> None:
    """Add events of several runs (type, data, run id), in order, with one statement."""
    if items:
        at = at or utcnow()
        _insert(db, session, [_values(origin, type_, data, run_id, at) for type_, data, run_id in items])


def _values(origin: str, type_: str, data: dict[str, Any], run_id: str | None, at: datetime,
            event_id: str | None = None) -> dict[str, Any]:
    return {"id": event_id or str(uuid.uuid4()), "origin": origin, "type": type_, "run_id": run_id, "data": data,
            "created_at": at, "run_of": run_id}


def _insert(db: Database, session: Session | Connection, values: dict[str, Any] | list[dict[str, Any]]) -> None:
    # Both outbox locks, always together: a transaction that appends events and an audit record
    # (every finish) takes them in one statement, and no two transactions take them in opposite
    # orders (which could deadlock).
    db.lock(session, *OUTBOX_LOCKS)
    connection_of(session).execute(_INSERT, values)


def as_dict(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "seq": event.seq,
        "origin": event.origin,
        "type": event.type,
        "run_id": event.run_id,
        "created_at": event.created_at.isoformat(),
        "data": event.data,
    }


def of_run(run_id: str) -> Any:
    """The condition "an event of this node's run ``run_id``" (by the run's pk: ``Event.run_pk``;
    a peer's event about the same run id has none, and is never this run's)."""
    return Event.run_pk == select(Run.pk).where(Run.id == run_id).scalar_subquery()


def for_run(session: Session, run_id: str, origin: str | None = None) -> list[Event]:
    """A run's timeline: only the events of ``origin``, the node that holds the run. Without it,
    the origin of the run's first event (its ``run.queued``, written when it was submitted here):
    events a peer sent about the same run id are another node's, never this run's."""
    if origin is None:
        origin = session.scalar(select(Event.origin).where(of_run(run_id)).order_by(Event.seq).limit(1))
    return list(session.scalars(select(Event).where(of_run(run_id), Event.origin == origin).order_by(Event.seq)))


def page(session: Session, since: int = 0, limit: int = 100, origin: str | None = None,
         node: str | None = None) -> list[Event]:
    """Events after ``since`` in seq order, of ``origin`` only if given. ``node`` is this node's
    name: another origin's events have no ``run_pk``, and saying so lets the database read them
    from the index of such events (this node's own are most events, read in seq order)."""
    query = select(Event).where(Event.seq > since)
    if origin:
        query = query.where(Event.origin == origin)
        if origin != node:
            query = query.where(Event.run_pk.is_(None))
    return list(session.scalars(query.order_by(Event.seq).limit(limit)))

"""Which runs a write transaction changed, told to whoever waits for them once it commits.

Every change of a run appends an event (the outbox, :mod:`aurora.events`), so the event writer
is the one place that notes "run R changed (event types T)"; :meth:`aurora.db.Database.write`
collects those notes for its transaction and hands them to its ``on_commit`` hook (the
publisher of :mod:`aurora.notify`) after the commit, never before: a waiter woken by a note
reads the committed state. A rolled-back transaction announces nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

#: for the write transaction open in this context: run id -> event types appended, and the runs
#: it creates
_pending: ContextVar[tuple[dict[str, list[str]], set[str]] | None] = ContextVar("aurora_changed_runs", default=None)


def note(run_id: str | None, type_: str) -> None:
    """Record that the open write transaction appended event ``type_`` of run ``run_id``."""
    pending = _pending.get()
    if pending is not None and run_id is not None and not (type_ in CREATION and run_id in pending[1]):
        pending[0].setdefault(run_id, []).append(type_)


#: what a run's creation appends: not announced by the transaction that creates the run
CREATION = frozenset({"run.queued", "run.triggered"})


def born(run_id: str) -> None:
    """The open write transaction creates run ``run_id``: nobody can wait for it yet (its id is
    told once the transaction has committed), so its creation is not announced. A submit then
    costs no publish, and no web process wakes for a note that nobody waits for. What else the
    transaction notes of it is (a workflow whose first steps end it at once: its submitter's
    answer still says it runs, and the note is what ends the wait)."""
    pending = _pending.get()
    if pending is not None:
        pending[1].add(run_id)
        kept = [type_ for type_ in pending[0].pop(run_id, ()) if type_ not in CREATION]
        if kept:
            pending[0][run_id] = kept


@contextmanager
def collecting() -> Iterator[dict[str, list[str]]]:
    """Collect the notes of one transaction (a nested transaction collects its own)."""
    changed: dict[str, list[str]] = {}
    token = _pending.set((changed, set()))
    try:
        yield changed
    finally:
        _pending.reset(token)

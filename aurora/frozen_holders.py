"""Ending, from outside, a PostgreSQL transaction whose frozen process holds the outbox's locks.

aurora/db.py gives a transaction that holds the outbox's advisory locks (which every change of
every run takes) ``PG_LOCKED_IDLE_MS`` of silence, as ``idle_in_transaction_session_timeout``.
PostgreSQL arms that clock only once its client has finished a turn (a Sync), so it misses a
process frozen (SIGSTOP, a hung machine) inside ``Database.batch``: its pipeline's INSERTs sent,
its COMMIT not, the backend waits mid-turn — 'active', in ClientRead — where no server-side limit
applies (before PostgreSQL 17's ``transaction_timeout``). So every ``FROZEN_HOLDERS_EVERY``
seconds beat has the system worker end any backend of this database that holds those locks and
has heard nothing from its client for as long: the same limit, applied from outside. (Not inside
the sweep: a sweep whose writes wait for the frozen holder's locks would wait in vain.) It sees,
and may end, the backends of its own role only (or with ``pg_signal_backend``). Aurora itself never holds them that long in silence, but in a
transaction that says so first (:func:`be_patient`).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func, select, text

from .db import AUDIT_LOCK_KEY, PG_LOCKED_IDLE_MS, Database, connection_of

log = logging.getLogger(__name__)

#: the application_name of a transaction that may hold the outbox locks in silence for long
#: (``aurora audit reseal``'s passes over a long chain): neither limit applies to it
PATIENT = "aurora: silent by design"

# An advisory lock on a bigint key shows in pg_locks as classid (its high 32 bits), objid (its
# low 32 bits) and objsubid 1. Both outbox locks are always taken together: one is enough here.
_END_FROZEN = text("""
SELECT a.pid, pg_terminate_backend(a.pid)
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.classid::bigint = :high AND l.objid::bigint = :low
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND a.pid <> pg_backend_pid() AND a.wait_event = 'ClientRead' AND a.application_name IS DISTINCT FROM :patient
  AND greatest(a.state_change, a.query_start) < now() - make_interval(secs => :seconds)
""")


def end_frozen_holders(db: Database) -> list[int]:
    """End the transactions that hold the outbox locks while their client says nothing; the pids
    of their backends. Nothing on SQLite (there the writer is a process of this machine, and no
    server could end it)."""
    if db.dialect != "postgresql":
        return []
    try:
        with db.engine.connect() as connection:
            ended = [int(pid) for pid, done in connection.execute(_END_FROZEN, {
                "high": AUDIT_LOCK_KEY >> 32, "low": AUDIT_LOCK_KEY & 0xFFFFFFFF,
                "seconds": PG_LOCKED_IDLE_MS / 1000, "patient": PATIENT}) if done]
            connection.commit()
    except Exception as exc:  # noqa: BLE001 - a look that fails (no permission) must not stop the sweep
        log.warning("could not look for frozen holders of the outbox locks (%s)", exc.__class__.__name__)
        return []
    for pid in ended:
        log.warning("ended PostgreSQL backend %d: it held the outbox locks and its client had said nothing "
                    "for %d s (a frozen process); the others go on", pid, PG_LOCKED_IDLE_MS // 1000)
    return ended


def be_patient(db: Database, session: Any) -> None:
    """Let this transaction hold the outbox locks in silence as long as it needs (for this
    transaction only): PostgreSQL's idle limit is lifted, and the sweeper passes it by."""
    if db.dialect == "postgresql":
        connection_of(session).execute(select(func.set_config("idle_in_transaction_session_timeout", "0", True),
                                              func.set_config("application_name", PATIENT, True)))

"""Thin Celery tasks: take the run id, call the engine. All logic lives in ``engine.py``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from celery import shared_task
from sqlalchemy.exc import OperationalError

from . import flow_runs
from .runtime import get_runtime

log = logging.getLogger(__name__)

# The system's tasks are acknowledged when taken, not when done: each firing is redone by the
# next one anyway, and an acknowledgement still pending when the broker connection drops made
# Celery's threads-pool worker fail its reconnect ("Error on stopping Hub") and stop consuming.

#: threads of a system worker that form ingests and federation syncs may hold at once; the rest
#: are the sweeper's, so that slow peers or a slow form provider can never stop recovery
#: (``aurora worker --system`` runs SYSTEM_THREADS threads)
SYSTEM_THREADS = 4
_slow_work = threading.BoundedSemaphore(SYSTEM_THREADS - 2)


@contextmanager
def _slow_slot(what: str) -> Iterator[bool]:
    """Whether ``what`` may run now: a firing that finds no free slot is skipped (the next one
    comes at the next interval), instead of waiting in a thread a sweep needs."""
    taken = _slow_work.acquire(blocking=False)
    if not taken:
        log.warning("%s skipped: the system worker's slots for slow work are busy", what)
    try:
        yield taken
    finally:
        if taken:
            _slow_work.release()


@shared_task(
    name="aurora.execute_run",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=10,
)
def execute_run(run_id: str) -> str:
    engine = get_runtime().engine
    outcome = engine.execute(run_id)
    log.info("run %s: %s %s", run_id, outcome.status, outcome.detail)
    status = outcome.status
    while outcome.follow_up:
        # The steps of a workflow that became ready: one goes on in this worker at once (no round
        # trip through the broker), the others to other workers, so independent steps run in
        # parallel. A step run here is claimed like any other: were this worker to die, the
        # sweeper would hand it on as it does any run whose lease lapsed.
        from .queue import enqueue

        now = next((follow for follow, delay in outcome.follow_up if not delay), None)
        for follow, delay in outcome.follow_up:
            if follow != now:
                enqueue(follow, countdown=delay)
        if now is None:
            break
        # its row as the transaction that created it wrote it: not read back
        outcome = engine.execute(now, fresh=next((row for row in outcome.fresh if row.id == now), None))
        log.info("run %s: %s %s", now, outcome.status, outcome.detail)
    return status


@shared_task(name="aurora.sweep", acks_late=False)
def sweep() -> int:
    from .celery_app import record_heartbeat
    from .queue import enqueue, waiting

    engine = get_runtime().engine
    again = engine.sweep(waiting())
    for run_id in again:
        enqueue(run_id)
    for run_id, delay in flow_runs.advance_all(engine):
        enqueue(run_id, countdown=delay)
    if again:
        log.info("sweeper sent %d run(s) again", len(again))
    record_heartbeat("sweep", "sweeper")  # /health: when the last sweep finished
    return len(again)


@shared_task(name="aurora.end_frozen_holders", acks_late=False)
def end_frozen_holders() -> int:
    """Beat's look for transactions whose frozen process holds the outbox locks (PostgreSQL)."""
    from .frozen_holders import end_frozen_holders as end

    return len(end(get_runtime().engine.db))


@shared_task(name="aurora.ingest_forms", acks_late=False)
def ingest_forms() -> int:
    """Beat's Typeform ingest: one run per configured form, only with allow_typeform_auto_ingest."""
    from .queue import enqueue

    with _slow_slot("form ingest") as free:
        started = get_runtime().engine.schedule_form_ingests() if free else []
    for run_id in started:
        enqueue(run_id)
    if started:
        log.info("form ingest started %d run(s)", len(started))
    return len(started)


@shared_task(name="aurora.federation_sync", acks_late=False)
def federation_sync() -> int:
    """Beat's sync pass over every enabled peer (each peer is synced by one process at a time),
    after publishing this node's audit checkpoint for its witnesses (``federation/witness.py``)."""
    from .federation import witness
    from .federation.sync import Syncer

    if get_runtime().policies.current().federation["enabled"]:
        try:
            witness.publish(get_runtime())
        except Exception:  # noqa: BLE001 - a failed checkpoint must not stop the sync
            log.exception("publishing the audit checkpoint failed")
    with _slow_slot("federation sync") as free:
        results = Syncer(get_runtime()).run() if free else []
    for result in results:
        log.info("federation sync: %s", result)
    return sum(r.get("pulled", 0) for r in results)


@shared_task(name="aurora.audit_checkpoint", acks_late=True)
def audit_checkpoint() -> int:
    """Beat's signed head of the audit chain, kept under AURORA_HOME: a log cut short after it is
    found by ``aurora audit verify`` without anyone having to remember ``aurora audit checkpoint``."""
    from . import audit

    runtime = get_runtime()
    try:
        checkpoint = audit.checkpoint_since_last(runtime.settings, runtime.db)
    except ValueError as exc:
        log.error("audit checkpoint refused, the chain does not verify: %s", exc)
        return -1
    return int(checkpoint["count"])


@shared_task(name="aurora.fire_schedules", acks_late=False)
def fire_schedules() -> int:
    """Beat's look at the stored definitions' schedules: start each due firing once."""
    from . import triggers
    from .queue import enqueue

    engine = get_runtime().engine
    started = triggers.fire_schedules(engine)
    for run_id in started:
        for ready in flow_runs.ready_steps(engine, run_id) or [run_id]:
            enqueue(ready)
    return len(started)

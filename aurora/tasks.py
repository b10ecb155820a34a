"""Thin Celery tasks: take the run id, call the engine. All logic lives in ``engine.py``."""

from __future__ import annotations

import logging

from celery import shared_task
from sqlalchemy.exc import OperationalError

from .runtime import get_runtime

log = logging.getLogger(__name__)


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
    outcome = get_runtime().engine.execute(run_id)
    log.info("run %s: %s %s", run_id, outcome.status, outcome.detail)
    return outcome.status


@shared_task(name="aurora.sweep", acks_late=True)
def sweep() -> int:
    from .queue import enqueue, waiting

    again = get_runtime().engine.sweep(waiting())
    for run_id in again:
        enqueue(run_id)
    if again:
        log.info("sweeper sent %d run(s) again", len(again))
    return len(again)


@shared_task(name="aurora.ingest_forms", acks_late=True)
def ingest_forms() -> int:
    """Beat's Typeform ingest: one run per configured form, only with allow_typeform_auto_ingest."""
    from .queue import enqueue

    started = get_runtime().engine.schedule_form_ingests()
    for run_id in started:
        enqueue(run_id)
    return len(started)


@shared_task(name="aurora.federation_sync", acks_late=True)
def federation_sync() -> int:
    """Beat's sync pass over every enabled peer (each peer is synced by one process at a time)."""
    from .federation.sync import Syncer

    results = Syncer(get_runtime()).run()
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

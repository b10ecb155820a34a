"""Send a run id to the workers. A failed send loses nothing: the run stays queued in the
database and the sweeper sends it again after ``AURORA_REQUEUE_AFTER`` seconds."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def enqueue(run_id: str) -> bool:
    from .celery_app import celery

    try:
        celery.send_task("aurora.execute_run", args=[run_id], retry=True,
                         retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2})
        return True
    except Exception:  # noqa: BLE001 - broker down: the sweeper will send it again
        log.warning("could not queue run %s; the sweeper will retry", run_id, exc_info=True)
        return False

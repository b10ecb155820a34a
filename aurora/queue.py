"""Send a run id to the workers. A failed send loses nothing: the run stays queued in the
database and the sweeper sends it again after ``AURORA_REQUEUE_AFTER`` seconds."""

from __future__ import annotations

import logging
import threading
from typing import Any

from .runtime import get_runtime

log = logging.getLogger(__name__)

_apps: dict[tuple[str, str], Any] = {}
_lock = threading.Lock()


def producer() -> Any:
    """The Celery app that publishes for the current runtime's broker (one per broker)."""
    settings = get_runtime().settings
    key = (settings.broker_url, str(settings.broker_folder))
    with _lock:
        if key not in _apps:
            from .celery_app import make_celery

            _apps[key] = make_celery(settings, set_as_current=False)
        return _apps[key]


def enqueue(run_id: str) -> bool:
    try:
        producer().send_task("aurora.execute_run", args=[run_id], retry=True,
                             retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2})
        return True
    except Exception:  # noqa: BLE001 - broker down: the sweeper will send it again
        log.warning("could not queue run %s; the sweeper will retry", run_id, exc_info=True)
        return False

"""Send a run id to the workers. A failed send loses nothing: the run stays queued in the
database, and the sweeper sends it again once it is ``AURORA_REQUEUE_AFTER`` seconds old and
its message is not among those waiting in the broker (``Engine.sweep``)."""

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


def enqueue(run_id: str, countdown: float | None = None) -> bool:
    """``countdown``: seconds the workers hold the message before running it (a deferred run)."""
    try:
        producer().send_task("aurora.execute_run", args=[run_id], countdown=countdown, retry=True,
                             retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2})
        return True
    except Exception:  # noqa: BLE001 - broker down: the sweeper will send it again
        log.warning("could not queue run %s; the sweeper will retry", run_id, exc_info=True)
        return False


def waiting() -> int | None:
    """How many run messages the broker holds, not yet handed to a worker; None if it cannot tell."""
    from kombu.transport import virtual

    from .celery_app import QUEUE

    try:
        with producer().connection_for_read() as connection:
            # A virtual transport (Redis, filesystem) declares by counting, and an empty Redis
            # queue does not exist, so only AMQP, whose declare must match the workers', asks passively.
            passive = not isinstance(connection.transport, virtual.Transport)
            return int(connection.default_channel.queue_declare(QUEUE, passive=passive).message_count)
    except Exception:  # noqa: BLE001 - broker down or queue not declared yet: resend nothing now
        log.info("could not count the messages waiting in the broker", exc_info=True)
        return None

"""kombu's filesystem transport (the embedded broker), with a worker that stops when asked.

The filesystem transport cannot wake a waiting consumer, so Celery runs it in its blocking
``synloop``: each turn calls ``drain_events(timeout=2.0)``, which polls the folder until a message
comes or two seconds pass. On SIGTERM Celery only sets a flag (``state.should_stop``) that the loop
reads between turns, and its loop runs one more turn after seeing it (``try: maybe_shutdown()
finally: _loop_cycle()``): an idle worker sat up to four seconds in two polls after "Warm shutdown"
before it even began to stop. Here each poll also looks at that flag and ends the wait at once, so
an idle embedded worker stops in well under a second; runs in flight are drained by Celery as
before (the pool finishes them, ``acks_late`` acknowledges them).

Used for ``filesystem://`` broker URLs (``broker_transport`` in ``celery_app``). Everything else is
kombu's.
"""

from __future__ import annotations

from queue import Empty
from time import monotonic, sleep
from typing import Any

from kombu.transport import filesystem


def _stopping() -> bool:
    # Imported late: web processes publish through this transport and never load the worker.
    from celery.worker import state

    # The flags hold an exit code, and a clean stop's is 0: test for "set", as Celery does.
    return any(flag is not None and flag is not False for flag in (state.should_stop, state.should_terminate))


class Transport(filesystem.Transport):
    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        start = monotonic()
        interval = self.polling_interval
        if timeout and interval and interval > timeout:
            interval = timeout
        while True:
            try:
                self.cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                if _stopping() or (timeout is not None and monotonic() - start >= timeout):
                    raise TimeoutError() from None  # socket.timeout, which Celery expects
                if interval is not None:
                    sleep(interval)


#: how Celery's ``broker_transport`` names this transport
NAME = f"{__name__}:Transport"

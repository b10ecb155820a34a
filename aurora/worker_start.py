"""Start one Celery worker of Aurora's app without Celery's command line.

``celery worker`` goes through ``celery.bin.celery``, whose ``amqp`` and ``shell`` commands pull
in an interactive shell's libraries (click-repl, prompt_toolkit, pygments): about 10 MB of Python
objects in the worker and in every process it forks, for nothing a worker does. This builds the
same ``app.Worker`` that ``celery.bin.worker`` builds, from the few options Aurora sets.
"""

from __future__ import annotations

import logging

from celery import Celery, concurrency
from celery.platforms import maybe_drop_privileges
from celery.utils.nodenames import default_nodename, host_format


def start_worker(app: Celery, *, queue: str, pool: str, concurrency_: int, loglevel: str, name: str) -> int:
    """Run a worker of ``app`` on ``queue`` until it stops; its exit status.

    No mingle, gossip or event heartbeats: Aurora's own leases and heartbeats say which worker
    is alive, and the broker carries only the runs' messages. ``name`` may hold Celery's ``%h``.
    """
    level = logging.getLevelName(loglevel.upper())
    if not isinstance(level, int):
        raise ValueError(f"no log level {loglevel!r}")
    maybe_drop_privileges()  # what `celery worker` checks first: a setuid binary is refused
    worker = app.Worker(
        hostname=host_format(default_nodename(name)), pool_cls=concurrency.get_implementation(pool),
        concurrency=concurrency_, queues=[queue], loglevel=level, quiet=True,  # no banner
        without_mingle=True, without_gossip=True, without_heartbeat=True)
    worker.start()
    return int(worker.exitcode or 0)

"""The gunicorn worker class of Aurora's web (``aurora serve``, deploy/aurora-web.service): uvicorn's,
serving aurora/web/asgi.py with the settings ``aurora up``'s web has (aurora/web/server.py).

gunicorn stays the process manager there (workers, graceful restarts, ``--max-requests``, the
``child_exit`` hook); each worker runs one event loop, which waits for runs without threads,
and a pool of ``--threads`` threads in which Flask answers (as gthread's threads did).
"""

from __future__ import annotations

from typing import Any

from uvicorn_worker import UvicornWorker

from .server import SERVER_SETTINGS, settle


class Worker(UvicornWorker):
    CONFIG_KWARGS: dict[str, Any] = SERVER_SETTINGS

    def load_wsgi(self) -> None:
        super().load_wsgi()
        settle(self.wsgi, self.cfg.threads)

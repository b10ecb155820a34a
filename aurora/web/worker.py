"""The gunicorn worker class of Aurora's web: uvicorn's, serving aurora/web/asgi.py.

gunicorn stays the process manager (workers, graceful restarts, ``--max-requests``, the
``child_exit`` hook); each worker runs one event loop, which waits for runs without threads,
and a pool of ``--threads`` threads in which Flask answers (as gthread's threads did).
"""

from __future__ import annotations

from typing import Any

from uvicorn_worker import UvicornWorker


class Worker(UvicornWorker):
    # The client address is the peer's: no proxy header may change it (sign-in throttling keys
    # on it), as under gunicorn's own workers. No lifespan events: the app needs none.
    CONFIG_KWARGS: dict[str, Any] = {"loop": "asyncio", "http": "httptools", "proxy_headers": False,
                                     "lifespan": "off", "server_header": False}

    def load_wsgi(self) -> None:
        super().load_wsgi()
        configure = getattr(self.wsgi, "configure", None)
        if configure is not None:
            configure(self.cfg.threads)

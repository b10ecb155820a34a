"""The gunicorn worker class of Aurora's web: uvicorn's, serving aurora/web/asgi.py.

gunicorn stays the process manager (workers, graceful restarts, ``--max-requests``, the
``child_exit`` hook); each worker runs one event loop, which waits for runs without threads,
and a pool of ``--threads`` threads in which Flask answers (as gthread's threads did).
"""

from __future__ import annotations

import gc
from typing import Any

from uvicorn_worker import UvicornWorker


class Worker(UvicornWorker):
    # The client address is the peer's: no proxy header may change it (sign-in throttling keys
    # on it), as under gunicorn's own workers. No lifespan events: the app needs none.
    # aurora/web/protocol.py: uvicorn's httptools protocol, each answer in one write.
    CONFIG_KWARGS: dict[str, Any] = {"loop": "asyncio", "http": "aurora.web.protocol:OneWrite", "proxy_headers": False,
                                     "lifespan": "off", "server_header": False}

    def load_wsgi(self) -> None:
        super().load_wsgi()
        configure = getattr(self.wsgi, "configure", None)
        if configure is not None:
            configure(self.cfg.threads)
        # What start-up made (modules, the app, SQLAlchemy's and the router's tables: ~100,000
        # objects) lives as long as the process: out of the collector's sight, a full collection
        # looks at what requests made since, instead of pausing every request of the process for
        # all of it (measured: 0.1-0.4 s for one full collection here; 0.01 ms after the freeze).
        gc.collect()
        gc.freeze()

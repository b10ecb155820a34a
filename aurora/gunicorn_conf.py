"""gunicorn settings Aurora starts with (``aurora up``, ``aurora serve``, deploy/aurora-web.service)."""

from __future__ import annotations

import os

# Aurora logs one line per request itself (without query strings, which may carry tokens).
accesslog = None
# gunicorn's own lines at INFO are its start banner ("Starting gunicorn", "Listening at", "Booting
# worker") and its signal handling: noise beside Aurora's start-up block. Warnings and errors (a
# worker that timed out or failed to boot) are still written; AURORA_LOG_LEVEL=debug brings back all.
loglevel = "debug" if os.environ.get("AURORA_LOG_LEVEL", "").lower() == "debug" else "warning"


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    from aurora.metrics import process_exited

    process_exited(worker.pid)

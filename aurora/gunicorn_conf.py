"""gunicorn settings Aurora starts with (``aurora up``, ``aurora serve``, deploy/aurora-web.service)."""

from __future__ import annotations

# Aurora logs one line per request itself (without query strings, which may carry tokens).
accesslog = None


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    from aurora.metrics import process_exited

    process_exited(worker.pid)

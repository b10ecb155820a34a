"""Production gunicorn settings for Aurora (deploy/aurora-web.service)."""

from __future__ import annotations

import multiprocessing

bind = ["127.0.0.1:9292", "127.0.0.1:9195"]  # put a TLS-terminating proxy in front
worker_class = "aurora.web.worker.Worker"  # uvicorn: waits on the event loop, Flask in `threads` threads
workers = max(2, multiprocessing.cpu_count())
threads = 8
timeout = 60
graceful_timeout = 20
keepalive = 5
accesslog = None  # Aurora logs one line per request itself, without query strings (tokens)
max_requests = 5000  # recycle workers now and then
max_requests_jitter = 500


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    from aurora.metrics import process_exited

    process_exited(worker.pid)

"""The baseline: a bare Celery app on the same broker, with the same delivery settings as Aurora."""

from __future__ import annotations

import os

import redis
from celery import Celery

BROKER = os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/12")
BACKEND = os.environ.get("BENCH_BACKEND") or None
COUNTER = "bench:noop:done"

app = Celery("noop", broker=BROKER, backend=BACKEND)
app.conf.update(
    task_serializer="json", accept_content=["json"], worker_prefetch_multiplier=1,
    task_acks_late=True, task_ignore_result=BACKEND is None, broker_connection_retry_on_startup=True,
    task_default_queue="bench-noop",
)
if BROKER.startswith("filesystem://"):
    folder = os.environ["BENCH_FOLDER"]
    for sub in ("queue", "processed"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    app.conf.broker_transport_options = {
        "data_folder_in": os.path.join(folder, "queue"), "data_folder_out": os.path.join(folder, "queue"),
        "processed_folder": os.path.join(folder, "processed"), "polling_interval": 0.01,
    }
_counter = redis.Redis.from_url(os.environ.get("BENCH_COUNTER", "redis://127.0.0.1:6379/12"))


@app.task(name="noop")
def noop() -> None:
    return None


@app.task(name="count")
def count() -> None:
    _counter.incr(COUNTER)

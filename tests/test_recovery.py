"""Recovery end to end: malformed broker files, lost messages, a broker outage, a backlog."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from conftest import free_port, missing, reachable
from sqlalchemy import create_engine, update

from aurora.models import Run, utcnow


def test_the_embedded_worker_sets_malformed_message_files_aside_and_carries_on(make_stack) -> None:
    stack = make_stack()
    queue = Path(stack.env["AURORA_HOME"]) / "broker" / "queue"
    queue.mkdir(parents=True)
    (queue / f"{1:015d}_{uuid.uuid4()}.aurora.msg").write_bytes(b"")  # kombu #1551, or a full disk
    (queue / f"{2:015d}_{uuid.uuid4()}.aurora.msg").write_bytes(b'{"body": "eyJ')
    stack.boot()
    run = stack.wait_status(stack.submit(), {"succeeded"}, timeout=30)
    assert run["result"]["dry_run"] is True
    time.sleep(1)
    assert stack.procs["worker"].poll() is None, stack.log("worker")[-3000:]
    assert "Unrecoverable error" not in stack.log("worker")
    assert len(list((queue.parent / "bad").iterdir())) == 2
    assert stack.log("worker").count("set aside a malformed message file") == 2


def test_a_message_taken_by_a_worker_that_died_is_sent_again_within_seconds(make_stack, redis_url) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    stack = make_stack(broker_url=redis_url).boot(workers=False)
    run_id = stack.submit()
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 10
    while not client.llen("aurora") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.rpop("aurora")  # taken off the queue, and never claimed: the worker died
    stack.start("worker", "worker", "-c", "1")
    started_at = time.monotonic()
    run = stack.wait_status(run_id, {"succeeded"}, timeout=60)
    assert time.monotonic() - started_at < 30
    types = [e["type"] for e in run["timeline"]]
    assert types.count("run.requeued") == 1 and types.count("run.running") == 1


@pytest.fixture
def private_redis(tmp_path: Path):
    if not shutil.which("redis-server"):
        missing("redis-server, to stop a private Redis on purpose")
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(tmp_path)]

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not reachable("127.0.0.1", port) and time.monotonic() < deadline:
            time.sleep(0.05)
        return proc

    state = {"proc": start()}

    def stop() -> None:
        state["proc"].terminate()
        state["proc"].wait(10)

    def restart() -> None:
        state["proc"] = start()

    yield f"redis://127.0.0.1:{port}/0", stop, restart
    if state["proc"].poll() is None:
        stop()


def test_runs_accepted_while_the_broker_was_down_run_when_it_is_back(make_stack, private_redis) -> None:
    url, stop, restart = private_redis
    stack = make_stack(broker_url=url).boot()
    stop()  # the broker and everything it held are gone
    accepted = [stack.submit() for _ in range(3)]
    health = requests.get(stack.url + "/health", timeout=5).json()
    assert health["components"]["broker"]["ok"] is False
    restart()
    for run_id in accepted:  # the workers reconnect with Celery's backoff (2 s, then 4 s, ...)
        run = stack.wait_status(run_id, {"succeeded"}, timeout=90)
        assert [e["type"] for e in run["timeline"]].count("run.running") == 1


def test_a_backlog_of_runs_does_not_delay_the_sweeper(make_stack) -> None:
    stack = make_stack(AURORA_SIMULATED_LATENCY_MS="500").boot(concurrency=1)
    waiting = stack.submit("charge_invoice")
    stack.wait_status(waiting, {"awaiting_approval"}, timeout=30)
    backlog = [stack.submit() for _ in range(40)]  # 20 s of work for the one worker process
    database = create_engine(stack.env["AURORA_DATABASE_URL"])
    with database.begin() as connection:
        connection.execute(update(Run).where(Run.id == waiting).values(gate_deadline=utcnow() - timedelta(seconds=1)))
    database.dispose()
    stack.wait_status(waiting, {"expired"}, timeout=6)
    assert stack.http("GET", f"/workflows/{backlog[-1]}").json()["status"] == "queued"

"""End to end: real gunicorn, real Celery worker and beat processes, real brokers and databases."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import ROOT, free_port

EXAMPLES = {
    "send_report": "succeeded",
    "intelligent_analysis": "succeeded",
    "post_instagram": "awaiting_approval",
    "charge_invoice": "awaiting_approval",
}
#: the examples run under the default (dry-run) policy: a success is a simulated one (exit 5)
EXIT = {"succeeded": 5, "awaiting_approval": 3}


def test_aurora_up_on_embedded_defaults_runs_every_example(make_stack) -> None:
    stack = make_stack()
    ports = [free_port(), free_port()]
    stack.port = ports[0]
    stack.start("up", "up", "--port", str(ports[0]), "--port", str(ports[1]), "--web-workers", "1")
    stack.read_first_key()
    health = stack.wait_healthy()
    assert health["components"]["database"]["kind"] == "sqlite"
    assert health["components"]["broker"]["kind"] == "filesystem"
    second = requests.get(f"http://127.0.0.1:{ports[1]}/health", timeout=5).json()
    assert second["node"] == health["node"]

    config = Path(stack.env["AURORA_CLI_CONFIG"])
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text())["token"] == stack.keys["admin"]

    # The CLI finds URL and key in the config file that `up` wrote.
    for name, final in EXAMPLES.items():
        done = stack.aurora("submit", str(ROOT / "workflows" / f"{name}.yaml"), "--wait", "--timeout", "60",
                            "--json", check=False)
        assert done.returncode == EXIT[final], done.stderr + done.stdout
        result = json.loads(done.stdout)
        assert result["status"] == final
        if final == "succeeded":
            assert result["result"]["dry_run"] is True
        assert f"{name}: {final}" in done.stderr

    listed = stack.aurora("list", "--limit", "10").stdout
    assert len(listed.strip().splitlines()) == 1 + 4  # a header and the runs
    waiting = json.loads(stack.aurora("list", "--status", "awaiting_approval", "--json").stdout)["runs"][0]["id"]
    assert json.loads(stack.aurora("cancel", waiting[:8], "--json").stdout)["status"] == "cancelled"
    assert json.loads(stack.aurora("status", waiting[:8], "--json").stdout)["timeline"][-1]["type"] == "run.cancelled"

    key = stack.aurora("keys", "create", "reporter", "--role", "viewer").stdout
    assert re.fullmatch(r"aur_[0-9a-f]{12}_\S+\n", key)
    viewer = requests.get(stack.url + "/workflows", headers={"Authorization": f"Bearer {key.strip()}"}, timeout=5)
    assert viewer.status_code == 200
    bad = stack.aurora("submit", str(ROOT / "README.md"), check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr

    # From any folder, with no AURORA_* variable: `up` recorded where its stack lives.
    recorded = json.loads((config.parent / "stack.json").read_text())
    assert stat.S_IMODE((config.parent / "stack.json").stat().st_mode) == 0o600
    assert recorded["AURORA_DATABASE_URL"] == stack.env["AURORA_DATABASE_URL"]
    elsewhere = stack.cwd.parent / "elsewhere"
    elsewhere.mkdir()
    bare = {k: v for k, v in stack.env.items() if not k.startswith("AURORA_")}
    bare["AURORA_CLI_CONFIG"] = stack.env["AURORA_CLI_CONFIG"]

    def anywhere(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "aurora", *args], env=bare, cwd=elsewhere, capture_output=True,
                              text=True, timeout=60)

    keys_listed = anywhere("keys", "list")
    assert keys_listed.returncode == 0 and "reporter" in keys_listed.stdout, keys_listed.stderr
    assert keys_listed.stdout.split()[:2] == ["NAME", "PERSON"]
    assert anywhere("adapters", "status").returncode == 0
    assert anywhere("doctor").returncode in (0, 1)  # warnings about the seed's placeholders are fine
    assert "CANCELLED" in anywhere("status", waiting[:8]).stdout
    assert not (elsewhere / "var").exists()


@pytest.fixture
def redis_stack(make_stack, redis_url, postgres_url):
    def build(database_url: str | None = None, workers: int = 1, loglevel: str = "info", **extra: str):
        stack = make_stack(database_url=database_url, broker_url=redis_url, **extra)
        stack.port = free_port()
        stack.aurora("db", "upgrade")
        stack.keys["admin"] = stack.aurora("keys", "create", "admin", "--role", "admin").stdout.strip()
        stack.keys["submitter"] = stack.aurora("keys", "create", "sam", "--role", "submitter").stdout.strip()
        stack.start("web", "serve", "--port", str(stack.port), "--workers", "1")
        for i in range(workers):
            stack.start(f"worker{i}", "worker", "-c", "2", "-l", loglevel)
        stack.start("system", "worker", "--system")
        stack.start("beat", "beat")
        stack.wait_healthy()
        return stack

    import redis

    redis.Redis.from_url(redis_url).flushdb()
    return build


def submit(stack, name: str) -> str:
    body = (ROOT / "workflows" / f"{name}.yaml").read_bytes()
    response = stack.http("POST", "/workflows", key="submitter", data=body,
                          headers={"Content-Type": "application/yaml"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_redis_and_postgresql_stack_runs_every_example(redis_stack, postgres_url) -> None:
    stack = redis_stack(database_url=postgres_url, workers=2)
    deadline = time.monotonic() + 60
    health = stack.http("GET", "/health", key="").json()
    while health["components"]["workers"]["seen"] < 2 and time.monotonic() < deadline:
        time.sleep(0.3)  # the second worker says it is ready a moment after the first
        health = stack.http("GET", "/health", key="").json()
    assert health["components"]["database"]["kind"] == "postgresql"
    assert health["components"]["broker"]["kind"] == "redis"
    assert health["components"]["workers"]["seen"] == 2
    ids = {name: submit(stack, name) for name in EXAMPLES for _ in range(3)}
    for name, run_id in ids.items():
        run = stack.wait_status(run_id, {EXAMPLES[name]})
        assert [e["type"] for e in run["timeline"]].count("run.running") == 1
    events = stack.http("GET", "/events?limit=1000").json()["events"]
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert {e["origin"] for e in events} == {stack.env["AURORA_NODE_NAME"]}


def test_a_worker_killed_mid_run_is_recovered_and_the_run_finishes_once(redis_stack) -> None:
    stack = redis_stack(AURORA_SIMULATED_LATENCY_MS="4000", AURORA_LEASE_SECONDS="2")
    run_id = submit(stack, "send_report")
    run = stack.wait_status(run_id, {"running"})
    deadline = time.monotonic() + 20
    while run.get("step") != "act" and time.monotonic() < deadline:
        run = stack.http("GET", f"/workflows/{run_id}").json()
    assert run["step"] == "act" and run["status"] == "running"
    stack.kill("worker0")  # SIGKILL to the whole worker: main process and its children
    stack.start("worker1", "worker", "-c", "1")
    run = stack.wait_status(run_id, {"succeeded", "failed"}, timeout=90)
    assert run["status"] == "succeeded", run
    types = [e["type"] for e in run["timeline"]]
    assert types.count("run.succeeded") == 1
    assert types.count("run.running") == 2  # the killed attempt and the one that finished
    assert run["attempts"] == 2
    reclaimed = [e for e in run["timeline"] if e["type"] == "run.queued" and "lease" in e["data"].get("reason", "")]
    assert len(reclaimed) == 1


def _backends(url: str, state: str = "active", wait_event: str | None = None) -> list[int]:
    """The pids of the database's other backends in ``state`` (waiting for ``wait_event``)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as probe:
        return [pid for (pid,) in probe.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND state = %s AND (%s::text IS NULL OR wait_event = %s)", (state, wait_event, wait_event))]


@pytest.mark.timeout(180)
def test_a_worker_frozen_holding_the_outbox_lock_stalls_the_others_only_briefly(redis_stack, postgres_url) -> None:
    """A worker stopped (SIGSTOP, a hung machine) in the worst moment — just after it took the
    outbox's locks, which every change of every run needs — must not stop the whole system until
    it wakes up: PostgreSQL ends its transaction after ``PG_LOCKED_IDLE_MS``, the others go on, its
    run is reclaimed once its lease lapses, and when it wakes it finishes nothing a second time."""
    import os
    import signal

    import psycopg

    from aurora.db import OUTBOX_LOCKS, PG_LOCKED_IDLE_MS

    stack = redis_stack(database_url=postgres_url, AURORA_SIMULATED_LATENCY_MS="3000", AURORA_LEASE_SECONDS="2")
    frozen = stack.procs["worker0"].pid
    first = submit(stack, "send_report")
    holder = psycopg.connect(postgres_url)  # holds the outbox locks while the worker's run acts
    holder.execute("SELECT pg_advisory_xact_lock(%s), pg_advisory_xact_lock(%s)", OUTBOX_LOCKS)
    deadline = time.monotonic() + 30
    while not _backends(postgres_url, wait_event="advisory") and time.monotonic() < deadline:
        time.sleep(0.05)  # its act done, the worker's finish waits for the locks
    assert _backends(postgres_url, wait_event="advisory"), stack.log("worker0")
    os.killpg(frozen, signal.SIGSTOP)
    try:
        holder.commit()  # the frozen worker's transaction now holds the locks, and says nothing more
        while not _backends(postgres_url, state="idle in transaction") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _backends(postgres_url, state="idle in transaction")
        stuck = time.monotonic()
        stack.start("worker1", "worker", "-c", "1")
        time.sleep(PG_LOCKED_IDLE_MS / 1000 * 0.4)
        second = submit(stack, "send_report")  # waits for the locks: at most what is left of the limit
        assert time.monotonic() - stuck < PG_LOCKED_IDLE_MS / 1000 + 5
        for run_id in (first, second):  # the first one reclaimed from the frozen worker
            run = stack.wait_status(run_id, {"succeeded", "failed"}, timeout=60)
            assert run["status"] == "succeeded", run
    finally:
        os.killpg(frozen, signal.SIGCONT)
        holder.close()
    third = submit(stack, "send_report")
    time.sleep(PG_LOCKED_IDLE_MS / 1000 / 4)  # the woken worker finds its transaction gone
    assert stack.procs["worker0"].poll() is None, stack.log("worker0")
    assert stack.wait_status(third, {"succeeded", "failed"})["status"] == "succeeded"
    run = stack.wait_status(first, {"succeeded"})
    assert [e["type"] for e in run["timeline"]].count("run.succeeded") == 1
    verified = stack.aurora("audit", "verify", check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    records = [json.loads(line) for line in stack.aurora("audit", "export").stdout.splitlines()]
    assert [r["run_id"] for r in records].count(first) == 1, records


@pytest.mark.timeout(120)
def test_a_process_frozen_inside_a_batch_with_the_outbox_locks_is_ended_by_the_sweeper(
        redis_stack, postgres_url) -> None:
    """Frozen inside ``Database.batch`` (its pipeline's statements sent, no Sync): PostgreSQL
    never arms the idle limit there — its backend waits mid-turn, 'active' — so the stack's
    sweeper ends it (aurora/frozen_holders.py), and the others get the locks within the limit."""
    import psycopg
    from sqlalchemy import text

    from aurora import db as aurora_db

    stack = redis_stack(database_url=postgres_url)
    limit = aurora_db.PG_LOCKED_IDLE_MS / 1000
    database = aurora_db.Database(postgres_url)
    connection = database.engine.connect()
    connection.begin()
    database.lock(connection, *aurora_db.OUTBOX_LOCKS)
    waited = None
    try:
        with database.batch(connection):
            connection.execute(text("SELECT 1"))  # sent; this process now says nothing, as a frozen one
            started = time.monotonic()
            with psycopg.connect(postgres_url, autocommit=True) as other:  # another writer's turn
                other.execute(f"SET lock_timeout = '{int(limit + 10)}s'")
                try:
                    other.execute("SELECT pg_advisory_xact_lock(%s)", (aurora_db.EVENT_LOCK_KEY,))
                    waited = time.monotonic() - started
                except psycopg.errors.LockNotAvailable:
                    pass
    except Exception:  # noqa: BLE001 - its transaction was ended: that is the point
        pass
    finally:
        connection.invalidate()
        connection.close()
        aurora_db.forget(postgres_url)
    assert waited is not None, f"another writer waited over {limit + 10:.0f} s\n" + stack.log("system")[-3000:]
    assert waited < limit + 4, waited  # the limit, and a sweep (every 0.5 s here)
    assert "held the outbox locks" in stack.log("system")
    run_id = submit(stack, "send_report")  # and the stack goes on
    assert stack.wait_status(run_id, {"succeeded", "failed"})["status"] == "succeeded"


def test_duplicate_messages_never_run_a_step_twice(redis_stack) -> None:
    stack = redis_stack()
    run_id = submit(stack, "send_report")
    from celery import Celery

    producer = Celery(broker=stack.env["AURORA_BROKER_URL"], set_as_current=False)
    for _ in range(3):
        producer.send_task("aurora.execute_run", args=[run_id], queue="aurora")
    stack.wait_status(run_id, {"succeeded"})
    time.sleep(1.5)  # let the duplicates arrive and be refused
    run = stack.http("GET", f"/workflows/{run_id}").json()
    types = [e["type"] for e in run["timeline"]]
    assert types.count("run.running") == 1 and types.count("run.succeeded") == 1
    assert run["attempts"] == 1


def test_the_worker_log_level_option_is_obeyed(redis_stack) -> None:
    stack = redis_stack(loglevel="warning")
    run_id = submit(stack, "send_report")
    stack.wait_status(run_id, {"succeeded"})
    log = stack.log("worker0")
    assert " INFO " not in log and run_id not in log, log[-2000:]


def test_submit_while_the_broker_is_down_loses_nothing(client, api_keys, runtime) -> None:
    from dataclasses import replace

    from aurora.runtime import set_runtime

    port = free_port()  # nothing listens here
    runtime.settings = replace(runtime.settings, broker_url=f"redis://127.0.0.1:{port}/0")
    set_runtime(runtime)
    body = (ROOT / "workflows" / "send_report.yaml").read_bytes()
    response = client.post("/workflows", data=body, headers={"Content-Type": "application/yaml",
                                                             **api_keys.header("submitter")})
    assert response.status_code == 201
    assert "sent again automatically" in response.json["warning"]
    run = client.get(f"/workflows/{response.json['id']}", headers=api_keys.header("viewer")).json
    assert run["status"] == "queued"


def test_rabbitmq_stack_runs_every_example_and_recovers_a_killed_worker(make_stack, rabbitmq_url) -> None:
    stack = make_stack(broker_url=rabbitmq_url, AURORA_LEASE_SECONDS="2").boot()
    health = stack.http("GET", "/health", key="").json()
    assert health["components"]["broker"]["kind"] == "amqp" and health["components"]["broker"]["ok"]
    ids = {stack.submit(name): final for name, final in EXAMPLES.items()}
    for run_id, final in ids.items():
        stack.wait_status(run_id, {final})
    stack.env["AURORA_SIMULATED_LATENCY_MS"] = "4000"
    stack.kill("worker")
    stack.start("worker", "worker", "-c", "1")
    run_id = stack.submit()
    stack.wait_status(run_id, {"running"})
    stack.kill("worker")  # mid-run: RabbitMQ gives the message back, the lease decides
    stack.start("worker", "worker", "-c", "1")
    run = stack.wait_status(run_id, {"succeeded", "failed"}, timeout=60)
    assert run["status"] == "succeeded"
    assert [e["type"] for e in run["timeline"]].count("run.succeeded") == 1

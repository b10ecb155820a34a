"""The spine's four figures, each beside a baseline measured in the same run.

1. submissions/s through POST /workflows vs a bare Flask endpoint that parses and validates (and vs
   ``floor_app``, the least any implementation must do);
2. submit-to-succeeded latency (p50/p95) vs a raw Celery no-op round trip on the same Redis;
3. runs completed/s with 5,000 queued runs and 2 worker processes vs raw Celery no-op throughput;
4. resident memory of the idle stack (web + worker + beat).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import redis
import requests
from harness import (
    ROOT,
    Procs,
    aurora_env,
    cleanup,
    free_port,
    percentile,
    temp_home,
    tree_rss_mb,
    wait_http,
    wait_port,
)
from sqlalchemy import func, select

REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/12")
MAIL = (ROOT / "workflows" / "send_report.yaml").read_bytes()


def _runtime(home: Path, broker: str) -> Any:
    from aurora.config import load_settings
    from aurora.migrations import upgrade
    from aurora.runtime import Runtime, set_runtime

    runtime = Runtime(load_settings(aurora_env(home, AURORA_BROKER_URL=broker)))
    upgrade(runtime.settings.database_url)
    set_runtime(runtime)
    return runtime


def _hammer(url: str, headers: dict[str, str], n: int, clients: int = 8) -> float:
    """Requests per second with ``clients`` concurrent keep-alive connections."""
    from concurrent.futures import ThreadPoolExecutor

    def worker(count: int) -> None:
        with requests.Session() as session:
            for _ in range(count):
                response = session.post(url, data=MAIL, headers=headers, timeout=30)
                assert response.status_code == 201, response.text

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, [n // clients // 5] * clients))  # warm-up
        started = time.perf_counter()
        list(pool.map(worker, [n // clients] * clients))
        return n / (time.perf_counter() - started)


def submissions(n: int = 600, rounds: int = 3) -> dict[str, Any]:
    """Three apps under the same gunicorn settings (2 workers x 4 threads), 1 to 8 concurrent clients.

    The bare endpoint (``bare_app``) is the issue's baseline; the floor (``floor_app``) does the least
    the spine must do per submission, with the same libraries and none of Aurora's own work, so the
    figures show how much of the gap is the work itself. This machine's speed drifts by tens of
    percent within a minute, so for each client count the apps take turns (bare, floor, Aurora,
    bare, ...) and the median of the rounds' ratios is reported.
    """
    from statistics import median

    from harness import gunicorn

    home = temp_home()
    try:
        env = aurora_env(home, AURORA_BROKER_URL=REDIS)
        with Procs(env, home) as procs:
            procs.run("db", "upgrade")
            key = procs.run("keys", "create", "bench", "--role", "submitter").strip()
            ours_port, bare_port, floor_port = free_port(), free_port(), free_port()
            procs.aurora("serve", "--port", str(ours_port), "--workers", "2")
            procs.start(*gunicorn(bare_port, "bare_app:app", chdir=ROOT / "bench"))
            procs.start(*gunicorn(floor_port, "floor_app:app", chdir=ROOT / "bench"))
            wait_http(f"http://127.0.0.1:{ours_port}")
            wait_port(bare_port)
            wait_port(floor_port)
            headers = {"Content-Type": "application/yaml", "Authorization": f"Bearer {key}"}
            time.sleep(1)
            by_clients = {}
            for clients in (1, 2, 4, 8):
                turns = [tuple(_hammer(f"http://127.0.0.1:{port}/workflows", headers, n, clients)
                               for port in (bare_port, floor_port, ours_port)) for _ in range(rounds)]
                by_clients[clients] = {"aurora_per_s": round(median(o for _, _, o in turns)),
                                       "baseline_per_s": round(median(b for b, _, _ in turns)),
                                       "floor_per_s": round(median(f for _, f, _ in turns)),
                                       "ratio": round(median(o / b for b, _, o in turns), 2),
                                       "round_ratios": [round(o / b, 2) for b, _, o in turns],
                                       "floor_ratio": round(median(f / b for b, f, _ in turns), 2),
                                       "ratio_to_floor": round(median(o / f for _, f, o in turns), 2)}
        return {"by_clients": by_clients, "goal": ">= 0.6"}
    finally:
        redis.Redis.from_url(REDIS).flushdb()
        cleanup(home)


def _noop_env(backend: bool) -> dict[str, str]:
    env = dict(os.environ, BENCH_BROKER=REDIS, BENCH_COUNTER=REDIS, PYTHONPATH=str(ROOT / "bench"))
    if backend:
        env["BENCH_BACKEND"] = REDIS
    return env


def _celery_worker(procs: Procs, concurrency: int) -> None:
    procs.start(sys.executable, "-m", "celery", "-A", "noop_app", "worker", "-Q", "bench-noop", "-c",
                str(concurrency), "--without-mingle", "--without-gossip", "-l", "warning")


def latency(n: int = 200) -> dict[str, Any]:
    home = temp_home()
    redis.Redis.from_url(REDIS).flushdb()
    try:
        env = _noop_env(backend=True)
        with Procs(env, ROOT / "bench") as procs:
            _celery_worker(procs, 1)
            sys.path.insert(0, str(ROOT / "bench"))
            os.environ.update(BENCH_BROKER=REDIS, BENCH_BACKEND=REDIS)
            import noop_app

            noop_app.app.conf.update(broker_url=REDIS, result_backend=REDIS, task_ignore_result=False)
            noop_app.noop.apply_async().get(timeout=60)
            raw = []
            for _ in range(n):
                started = time.perf_counter()
                noop_app.noop.apply_async().get(timeout=10)
                raw.append((time.perf_counter() - started) * 1000)
        runtime = _runtime(home, REDIS)
        env = aurora_env(home, AURORA_BROKER_URL=REDIS)
        with Procs(env, home) as procs:
            procs.aurora("worker", "-c", "1", "-l", "warning")
            from aurora import documents
            from aurora.engine import Engine  # noqa: F401 - imported for its side effects on mappers
            from aurora.models import Run
            from aurora.queue import enqueue

            workflow = documents.load(MAIL)
            ours = []
            for i in range(n + 5):
                run = runtime.engine.submit(workflow, "bench")
                enqueue(run.id)
                deadline = time.monotonic() + 30
                while True:
                    with runtime.db.read() as session:
                        row = session.execute(select(Run.created_at, Run.finished_at).where(Run.id == run.id)).one()
                    if row.finished_at:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError("run did not finish")
                    time.sleep(0.0005)
                if i >= 5:  # the first runs warm the worker up
                    ours.append((row.finished_at - row.created_at).total_seconds() * 1000)
        p50, base50 = percentile(ours, 50), percentile(raw, 50)
        return {
            "aurora_p50_ms": round(p50, 2), "aurora_p95_ms": round(percentile(ours, 95), 2),
            "raw_p50_ms": round(base50, 2), "raw_p95_ms": round(percentile(raw, 95), 2),
            "ratio_p50": round(p50 / base50, 2), "goal": "p50 <= 3x raw",
        }
    finally:
        redis.Redis.from_url(REDIS).flushdb()
        cleanup(home)


def _rate(done: Any, total: int, timeout: float = 600) -> float:
    """Completions per second from the first completion to the last."""
    deadline = time.monotonic() + timeout
    first_at, first_count = None, 0
    while time.monotonic() < deadline:
        count = done()
        if count and first_at is None:
            first_at, first_count = time.perf_counter(), count
        if count >= total:
            return (total - first_count) / (time.perf_counter() - first_at)
        time.sleep(0.1)  # polling costs the measured side CPU: not too often
    raise RuntimeError(f"only {done()} of {total} completed")


def _raw_rate(client: redis.Redis, n: int) -> float:
    import noop_app

    client.flushdb()
    for _ in range(n):
        noop_app.count.apply_async()
    with Procs(_noop_env(backend=False), ROOT / "bench") as procs:
        _celery_worker(procs, 2)
        return _rate(lambda: int(client.get(noop_app.COUNTER) or 0), n)


def throughput(n: int = 5000) -> dict[str, Any]:
    """Aurora's run rate between two raw Celery measurements (before and after it), so that a drift in
    the machine's speed during the run shows up as a gap between the two instead of in the ratio."""
    home = temp_home()
    client = redis.Redis.from_url(REDIS)
    try:
        sys.path.insert(0, str(ROOT / "bench"))
        os.environ.update(BENCH_BROKER=REDIS)
        before = _raw_rate(client, n)
        client.flushdb()
        runtime = _runtime(home, REDIS)
        from aurora import documents
        from aurora.models import Run
        from aurora.queue import enqueue

        workflow = documents.load(MAIL)
        for _ in range(n):
            enqueue(runtime.engine.submit(workflow, "bench").id)

        def succeeded() -> int:
            with runtime.db.read() as session:
                return session.scalar(select(func.count()).select_from(Run).where(Run.status == "succeeded"))

        with Procs(aurora_env(home, AURORA_BROKER_URL=REDIS), home) as procs:
            procs.aurora("worker", "-c", "2", "-l", "warning")
            ours = _rate(succeeded, n)
        after = _raw_rate(client, n)
        raw = (before + after) / 2
        return {"aurora_runs_per_s": round(ours), "raw_tasks_per_s": round(raw),
                "raw_before_after": [round(before), round(after)], "ratio": round(ours / raw, 2), "goal": ">= 0.5"}
    finally:
        client.flushdb()
        cleanup(home)


def memory() -> dict[str, Any]:
    home = temp_home()
    try:
        port = free_port()
        with Procs(aurora_env(home), home) as procs:
            up = procs.aurora("up", "--port", str(port))
            wait_http(f"http://127.0.0.1:{port}", workers=True)
            time.sleep(5)
            health = requests.get(f"http://127.0.0.1:{port}/health", timeout=5).json()
            assert health["components"]["beats"]["ok"], health
            rss, pss = tree_rss_mb(up.pid), tree_rss_mb(up.pid, proportional=True)
        return {"idle_stack_rss_mb": round(rss), "idle_stack_pss_mb": round(pss), "goal": "<= 400 MB"}
    finally:
        cleanup(home)

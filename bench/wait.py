"""Waiting for runs without polling: what a client sees, what waiters cost, what a note costs.

    python bench/wait.py            # embedded default and Redis; n8n too when bench/peers installed it

- submit → succeeded seen by the client (``POST /workflows`` with ``Prefer: wait=30``), p50/p95,
  beside the run's own ``created_at → finished_at`` from the same answers (goal: client p50
  within 2× of it) and, when n8n is installed (``bench/peers/install.sh``), beside n8n's webhook
  → done p50 measured in the same invocation (goal: ≥ 5× below it);
- 500 clients waiting at once on runs that nobody runs yet: the web worker's threads and RSS
  before and while they wait, then how long until every one of them is answered once a worker
  starts;
- one note (``aurora.notify``): the publisher's cost per commit and the time to the listener, on
  loopback UDP and on Redis pub/sub.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT, LeanClient, Procs, aurora_env, cleanup, free_port, percentile, temp_home, wait_http  # noqa: E402

REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/12")
MAIL = (ROOT / "workflows" / "send_report.yaml").read_bytes()
WAITERS = 500


def _rss_threads(pid: int) -> tuple[float, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return round(rss / 1024, 1), len(os.listdir(f"/proc/{pid}/task"))


def _web_worker(master: int) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == master:
                    return int(entry.name)
            except (OSError, IndexError, ValueError):
                continue
    raise RuntimeError("no gunicorn worker found")


class Stack:
    """web (one gunicorn worker) + one Celery worker process, on a private home."""

    def __init__(self, broker: str, worker: bool = True):
        self.home = temp_home()
        self.env = aurora_env(self.home, AURORA_BROKER_URL=broker)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs = Procs(self.env, self.home)
        self.procs.run("db", "upgrade")
        # a submitter, as a client that submits and waits would hold (an admin key is read every time)
        self.key = self.procs.run("keys", "create", "bench", "--role", "submitter").strip()
        self.web = self.procs.aurora("serve", "--port", str(self.port), "--workers", "1")
        if worker:
            self.start_worker()
        wait_http(self.url, workers=worker)

    def start_worker(self) -> None:
        self.procs.aurora("worker", "-c", "1", "-l", "warning")

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", "Content-Type": "application/yaml", **extra}

    def close(self) -> None:
        self.procs.stop()
        cleanup(self.home)


def submit_and_wait(stack: Stack, n: int) -> dict[str, Any]:
    """Sequential submits that wait, through a lean client (the figure) and through requests
    (beside it: what a heavier client library adds on the same two cores)."""
    from datetime import datetime

    lean, heavy = LeanClient(stack.url), requests.Session()
    figures: dict[str, Any] = {}
    for kind in ("lean", "requests"):
        seen, inside = [], []
        for i in range(n + 10):
            started = time.perf_counter()
            if kind == "lean":
                _, run = lean.post_json("/workflows", MAIL, stack.headers(Prefer="wait=30"))
            else:
                run = heavy.post(stack.url + "/workflows", data=MAIL, headers=stack.headers(Prefer="wait=30"),
                                 timeout=60).json()
            elapsed = (time.perf_counter() - started) * 1000
            if not isinstance(run, dict) or run.get("status") != "succeeded":
                raise RuntimeError(f"run ended {run}")
            if i >= 10:  # the first runs warm both sides up
                seen.append(elapsed)
                inside.append((datetime.fromisoformat(run["finished_at"])
                               - datetime.fromisoformat(run["created_at"])).total_seconds() * 1000)
        client50, inside50 = percentile(seen, 50), percentile(inside, 50)
        if kind == "lean":
            figures.update({"client_p50_ms": round(client50, 2), "client_p95_ms": round(percentile(seen, 95), 2),
                            "inside_p50_ms": round(inside50, 2), "ratio_to_inside": round(client50 / inside50, 2)})
        else:
            figures.update({"requests_client_p50_ms": round(client50, 2),
                            "requests_ratio_to_inside": round(client50 / inside50, 2)})
    figures["goal"] = "client p50 <= 2x created_at -> finished_at"
    return figures


async def _one_waiter(port: int, key: str, body: bytes, seconds: int) -> tuple[int, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (f"POST /workflows HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/yaml\r\nPrefer: wait={seconds}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode()
    writer.write(head + body)
    await writer.drain()
    data = await reader.read()
    writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, time.perf_counter()


def many_waiters(broker: str) -> dict[str, Any]:
    stack = Stack(broker, worker=False)
    try:
        worker = _web_worker(stack.web.pid)
        requests.get(stack.url + "/workflows", headers=stack.headers(), timeout=10)
        rss_before, threads_before = _rss_threads(worker)

        async def scenario() -> dict[str, Any]:
            tasks = []
            for _ in range(WAITERS):
                tasks.append(asyncio.ensure_future(_one_waiter(stack.port, stack.key, MAIL, 60)))
                await asyncio.sleep(0.002)
            await asyncio.sleep(3)
            assert not any(t.done() for t in tasks), "a waiter was answered before any run could finish"
            rss, threads = _rss_threads(worker)
            started = time.perf_counter()
            stack.start_worker()
            answers = await asyncio.gather(*tasks)
            return {"rss_idle_mb": rss_before, "rss_waiting_mb": rss, "threads_idle": threads_before,
                    "threads_waiting": threads, "all_answered_s": round(max(t for _, t in answers) - started, 2),
                    "answered_ok": sum(1 for code, _ in answers if code == 201)}

        figures = asyncio.run(scenario())
        figures["waiters"] = WAITERS
        figures["kb_per_waiter"] = round((figures["rss_waiting_mb"] - figures["rss_idle_mb"]) * 1024 / WAITERS, 1)
        return figures
    finally:
        stack.close()


def note_cost(n: int = 2000) -> dict[str, Any]:
    """The publisher's time per commit, and publish → heard, on UDP and Redis."""
    from aurora import notify

    home = temp_home()
    figures: dict[str, Any] = {}
    try:
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listener.bind(("127.0.0.1", 0))
        notify.register(home / "notify", listener.getsockname()[1])
        publish = notify.LocalPublisher(home / "notify")
        spent, heard = [], []
        for i in range(n):
            started = time.perf_counter()
            publish({f"run-{i}": ["run.succeeded"]})
            spent.append(time.perf_counter() - started)
            listener.recv(200)
            heard.append(time.perf_counter() - started)
        figures["udp_publish_us"] = round(statistics.median(spent) * 1e6, 1)
        figures["udp_heard_us"] = round(statistics.median(heard) * 1e6, 1)
        import redis

        publish = notify.RedisPublisher(REDIS, "aurora.bench.notes")
        subscriber = redis.Redis.from_url(REDIS).pubsub(ignore_subscribe_messages=True)
        subscriber.subscribe("aurora.bench.notes")
        while subscriber.get_message(timeout=1) is None and not subscriber.subscribed:
            pass
        spent, heard = [], []
        for i in range(n // 4):
            started = time.perf_counter()
            publish({f"run-{i}": ["run.succeeded"]})
            spent.append(time.perf_counter() - started)
            while subscriber.get_message(timeout=1) is None:
                pass
            heard.append(time.perf_counter() - started)
        figures["redis_publish_us"] = round(statistics.median(spent) * 1e6, 1)
        figures["redis_heard_us"] = round(statistics.median(heard) * 1e6, 1)
    finally:
        cleanup(home)
    return figures


def n8n_figure(n: int) -> dict[str, Any] | None:
    sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
    import peers

    if not peers.n8n_installed():
        return None
    with peers.N8n() as n8n:
        return {"webhook_done_p50_ms": round(n8n.sequential(n)["p50_ms"], 2)}


def main() -> None:
    results: dict[str, Any] = {}
    n8n = n8n_figure(100)
    for name, broker in (("embedded", "filesystem://"), ("redis", REDIS)):
        stack = Stack(broker)
        try:
            results[name] = submit_and_wait(stack, 200)
        finally:
            stack.close()
        if n8n:
            results[name]["n8n_webhook_p50_ms"] = n8n["webhook_done_p50_ms"]
            results[name]["n8n_over_aurora"] = round(n8n["webhook_done_p50_ms"] / results[name]["client_p50_ms"], 1)
        print(f"submit → succeeded, {name}: {json.dumps(results[name])}", flush=True)
    for name, broker in (("embedded", "filesystem://"), ("redis", REDIS)):
        results[f"waiters_{name}"] = many_waiters(broker)
        print(f"{WAITERS} waiters, {name}: {json.dumps(results[f'waiters_{name}'])}", flush=True)
    results["notes"] = note_cost()
    print(f"one note: {json.dumps(results['notes'])}", flush=True)
    print(json.dumps(results, indent=2))
    import run

    run.record("wait", results)


if __name__ == "__main__":
    main()

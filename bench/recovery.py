"""Reliability, measured: a soak of the embedded default, recovery times, stop times, resends.

1. soak: ``aurora up`` on the embedded default, bursts of submissions, a sweep every second;
   every accepted run must finish, no process may die, and the stack's memory must stay flat.
   ``make bench`` runs it for 60 s; ``python bench/recovery.py soak --minutes 60`` for an hour.
2. recovery: from a worker SIGKILLed mid-run to its run finished (lease lapsed, swept, run again),
   and from a lost message (taken off the broker, never claimed) to its run finished.
3. stop: how long ``aurora up`` takes to stop on SIGTERM, idle and with a run in flight
   (which must finish, not be cut off).
4. backlog: 10,000 runs queued before any worker starts; how many of them the sweeper sent again.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any

import requests
from harness import ROOT, Procs, aurora_env, cleanup, free_port, temp_home, tree_rss_mb, wait_http

MAIL = (ROOT / "workflows" / "send_report.yaml").read_bytes()
FINAL = {"succeeded", "failed", "rejected", "expired", "cancelled", "needs_reconciliation"}


class Up:
    """``aurora up`` in a temporary home, its output kept for reading."""

    def __init__(self, **env: str):
        self.home = temp_home()
        self.port = free_port()
        self.env = aurora_env(self.home, **env)
        self.log = self.home / "up.log"
        self.proc: subprocess.Popen | None = None
        self.key = ""

    def start(self) -> Up:
        with open(self.log, "ab") as handle:
            self.proc = subprocess.Popen([sys.executable, "-m", "aurora", "up", "--port", str(self.port),
                                          "--port", str(free_port())], env=self.env, cwd=self.home,
                                         stdout=handle, stderr=subprocess.STDOUT)
        wait_http(self.url, workers=True)
        match = re.search(r"AURORA_TOKEN=(aur_\S+)", self.log.read_text())
        assert match, self.log.read_text()[-2000:]
        self.key = match.group(1)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def submit(self, session: requests.Session | None = None) -> str:
        response = (session or requests).post(self.url + "/workflows", data=MAIL, timeout=30, headers={
            "Authorization": f"Bearer {self.key}", "Content-Type": "application/yaml"})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def status(self, run_id: str) -> str:
        return requests.get(f"{self.url}/workflows/{run_id}", timeout=10,
                            headers={"Authorization": f"Bearer {self.key}"}).json()["status"]

    def stop(self, timeout: float = 120) -> float:
        """SIGTERM ``aurora up``; the seconds until it exited."""
        assert self.proc is not None
        started = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return time.perf_counter() - started

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        cleanup(self.home)


def _wait_final(up: Up, run_ids: list[str], timeout: float) -> dict[str, float]:
    """Seconds from now until each run was final (missing: not final by the timeout)."""
    started, done = time.perf_counter(), {}
    deadline = started + timeout
    while len(done) < len(run_ids) and time.perf_counter() < deadline:
        for run_id in run_ids:
            if run_id not in done and up.status(run_id) in FINAL:
                done[run_id] = time.perf_counter() - started
        time.sleep(0.2)
    return done


def soak(seconds: float = 60, burst: int = 40, every: float = 3.0) -> dict[str, Any]:
    up = Up(AURORA_SWEEP_INTERVAL="1").start()
    try:
        assert up.proc is not None
        time.sleep(3)
        rss_start = tree_rss_mb(up.proc.pid)
        submitted: list[str] = []
        samples = []
        ends = time.perf_counter() + seconds
        with requests.Session() as session:
            while time.perf_counter() < ends:
                submitted += [up.submit(session) for _ in range(burst)]
                samples.append(round(tree_rss_mb(up.proc.pid)))
                time.sleep(every)
        finished = _wait_final(up, submitted, timeout=120)
        succeeded = sum(up.status(r) == "succeeded" for r in submitted)
        rss_end = tree_rss_mb(up.proc.pid)
        log = up.log.read_text(errors="replace")
        return {"seconds": seconds, "runs": len(submitted), "succeeded": succeeded,
                "unfinished": len(submitted) - len(finished),
                "crashes": log.count("Unrecoverable error") + len(re.findall(r"exited (with|unexpectedly)", log)),
                "rss_start_mb": round(rss_start), "rss_end_mb": round(rss_end),
                "rss_max_mb": max(samples, default=0),
                "rss_by_quarter_mb": [samples[min(len(samples) - 1, len(samples) * q // 4)] for q in range(1, 5)]
                if samples else [],
                "goal": "0 crashes, every run finished, RSS flat"}
    finally:
        up.close()


def _stack(home: Path, **env: str) -> tuple[Procs, str, str]:
    """web + system worker with beat, no run worker yet; returns the procs, URL and admin key."""
    procs = Procs(aurora_env(home, AURORA_SWEEP_INTERVAL="1", **env), home)
    port = free_port()
    procs.run("db", "upgrade")
    key = procs.run("keys", "create", "admin", "--role", "admin").strip()
    procs.aurora("serve", "--port", str(port), "--workers", "1")
    procs.aurora("worker", "--system", "--beat")
    url = f"http://127.0.0.1:{port}"
    wait_http(url)
    return procs, url, key


def recovery(rounds: int = 5, lease: int = 10) -> dict[str, Any]:
    home = temp_home()
    try:
        procs, url, key = _stack(home, AURORA_LEASE_SECONDS=str(lease), AURORA_SIMULATED_LATENCY_MS="2000")
        up = Up()
        up.port, up.key = int(url.rsplit(":", 1)[1]), key
        killed = []
        with procs:
            for _ in range(rounds):
                worker = procs.aurora("worker", "-c", "1")
                wait_http(url, workers=True)
                run_id = up.submit()
                while up.status(run_id) != "running":
                    time.sleep(0.05)
                time.sleep(0.5)  # inside the simulated call
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
                procs.aurora("worker", "-c", "1")
                killed += list(_wait_final(up, [run_id], timeout=lease * 3 + 60).values())
                procs.procs[-1].send_signal(signal.SIGTERM)
                procs.procs[-1].wait(30)
            # Lost messages: taken off the broker before any worker claimed them.
            lost_ids = [up.submit() for _ in range(rounds)]
            queue = home / "var" / "broker" / "queue"
            while len(list(queue.glob("*.aurora.msg"))) < rounds:
                time.sleep(0.05)
            for message in queue.glob("*.aurora.msg"):
                message.unlink()
            procs.aurora("worker", "-c", "2")
            lost = list(_wait_final(up, lost_ids, timeout=120).values())
        return {"worker_killed_p50_s": round(median(killed), 1), "worker_killed_max_s": round(max(killed), 1),
                "lease_s": lease, "lost_message_p50_s": round(median(lost), 1),
                "lost_message_max_s": round(max(lost), 1), "lost_runs": rounds, "lost_recovered": len(lost),
                "goal": "lost message running again within 60 s"}
    finally:
        cleanup(home)


def stop_times() -> dict[str, Any]:
    idle = Up().start()
    try:
        time.sleep(2)
        idle_s = idle.stop()
    finally:
        idle.close()
    busy = Up(AURORA_SIMULATED_LATENCY_MS="3000").start()
    try:
        run_id = busy.submit()
        while busy.status(run_id) != "running":
            time.sleep(0.05)
        busy_s = busy.stop()
        from sqlalchemy import create_engine, text

        database = create_engine(busy.env["AURORA_DATABASE_URL"])
        with database.connect() as connection:
            status = connection.execute(text("SELECT status FROM runs WHERE id = :i"), {"i": run_id}).scalar()
        database.dispose()
    finally:
        busy.close()
    return {"idle_stop_s": round(idle_s, 2), "busy_stop_s": round(busy_s, 2), "busy_run": status,
            "goal": "idle < 3 s; busy within the lease, its run finished"}


def backlog(runs: int = 10_000) -> dict[str, Any]:
    home = temp_home()
    try:
        procs, url, _ = _stack(home)
        with procs:
            from aurora import documents
            from aurora.config import load_settings
            from aurora.queue import enqueue
            from aurora.runtime import Runtime, set_runtime

            runtime = Runtime(load_settings(procs.env))
            set_runtime(runtime)
            workflow = documents.load(MAIL.decode())
            for _ in range(runs):
                enqueue(runtime.engine.submit(workflow, "bench").id)
            started = time.perf_counter()
            procs.aurora("worker", "-c", "2")
            from sqlalchemy import func, select

            from aurora.models import Event, Run

            deadline = started + 600
            while time.perf_counter() < deadline:
                with runtime.db.read() as session:
                    left = session.scalar(select(func.count()).select_from(Run).where(Run.status == "queued"))
                if not left:
                    break
                time.sleep(1)
            elapsed = time.perf_counter() - started
            with runtime.db.read() as session:
                resent = session.scalar(select(func.count()).select_from(Event).where(Event.type == "run.requeued"))
            set_runtime(None)
        return {"runs": runs, "drained_s": round(elapsed, 1), "resent": resent,
                "resent_pct": round(100 * resent / runs, 3), "goal": "resends < 1% of runs"}
    finally:
        cleanup(home)


def reliability() -> dict[str, Any]:
    """What ``make bench`` runs: each part, short."""
    return {"soak": soak(), "recovery": recovery(), "stop": stop_times(), "backlog": backlog()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["soak", "recovery", "stop", "backlog", "all"])
    parser.add_argument("--minutes", type=float, default=1.0, help="length of the soak")
    args = parser.parse_args()
    parts = {"soak": lambda: soak(args.minutes * 60), "recovery": recovery, "stop": stop_times,
             "backlog": backlog, "all": reliability}
    print(json.dumps(parts[args.part](), indent=2))

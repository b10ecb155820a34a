"""The embedded broker choice: 500 no-op tasks through each server-less kombu transport."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import redis
from harness import ROOT, Procs, cleanup, temp_home

N = 500


def _one(broker: str, home: Any) -> float:
    client = redis.Redis.from_url(os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/12"))
    client.delete("bench:noop:done")
    env = dict(os.environ, BENCH_BROKER=broker, BENCH_FOLDER=str(home / "fs"), PYTHONPATH=str(ROOT / "bench"))
    code = (
        "import noop_app\n"
        f"for _ in range({N}): noop_app.count.apply_async()\n"
    )
    import subprocess

    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT / "bench", check=True)
    with Procs(env, ROOT / "bench") as procs:
        started = time.perf_counter()
        procs.start(sys.executable, "-m", "celery", "-A", "noop_app", "worker", "-Q", "bench-noop", "-c", "2",
                    "--without-mingle", "--without-gossip", "-l", "warning")
        first = None
        while int(client.get("bench:noop:done") or 0) < N:
            if first is None and int(client.get("bench:noop:done") or 0) > 0:
                first = time.perf_counter()
            if time.perf_counter() - started > 300:
                raise RuntimeError(f"{broker}: tasks did not finish")
            time.sleep(0.01)
        return time.perf_counter() - (first or started)


def compare() -> dict[str, Any]:
    home = temp_home()
    try:
        fs = _one("filesystem://", home)
        sqla = _one(f"sqla+sqlite:///{home / 'broker.db'}", home)
        return {"filesystem_s": round(fs, 2), "sqlalchemy_s": round(sqla, 2), "ratio": round(sqla / fs, 1)}
    finally:
        cleanup(home)

"""Scale-out on the production path: PostgreSQL + Redis, 1 and 2 worker processes, beside raw Celery.

Raw Celery (2 processes, a no-op that counts in Redis) is measured before and after each round of
Aurora on the same Redis, so that a drift of this shared machine shows as a gap between the two;
the figures are the medians of the rounds (``--rounds``, 3), each round's ratio against the raw
figures on either side of it. For each worker
count, ``n`` dry runs are queued first, then an ``aurora worker -c N`` drains them; the rate is
taken from the first completion to the last, and over the same interval the CPU of the worker's
process tree and of the PostgreSQL backends serving this database (from /proc) is divided by the
runs finished in it.

Usage: python bench/scaleout.py [-n N] [--rounds R]   (BENCH_PG_ADMIN: a PostgreSQL URL allowed to CREATE DATABASE)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis  # noqa: E402
from harness import ROOT, Procs, aurora_env, cleanup, temp_home  # noqa: E402

REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/12")
ADMIN_PG = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
MAIL = (ROOT / "workflows" / "send_report.yaml").read_bytes()
TICK = os.sysconf("SC_CLK_TCK")


def _cpu_ms(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            pass
    return total * 1000 / TICK


def _tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(children.get(current, []))
    return found


def _drain(done: Any, total: int, cpu: Any, timeout: float = 300) -> tuple[float, dict[str, float]]:
    """(completions/s, CPU ms per completion by part) from the first completion to the last."""
    deadline = time.monotonic() + timeout
    first = None
    while time.monotonic() < deadline:
        count = done()
        if count and first is None:
            first = (time.perf_counter(), count, cpu())
        if count >= total and first is not None:
            elapsed, finished, spent = time.perf_counter() - first[0], total - first[1], cpu()
            return finished / elapsed, {k: round((spent[k] - first[2][k]) / finished, 2) for k in spent}
        time.sleep(0.1)
    raise RuntimeError(f"only {done()} of {total} completed")


def _raw(client: redis.Redis, n: int) -> float:
    import noop_app
    from spine import _celery_worker, _noop_env

    client.flushdb()
    for _ in range(n):
        noop_app.count.apply_async()
    with Procs(_noop_env(backend=False), ROOT / "bench") as procs:
        _celery_worker(procs, 2)
        rate, _ = _drain(lambda: int(client.get(noop_app.COUNTER) or 0), n, lambda: {})
        return rate


def _aurora(n: int, processes: int, admin: Any) -> dict[str, Any]:
    import psycopg

    home = temp_home()
    database = f"aurora_bench_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{database}"')
    url = ADMIN_PG.rsplit("/", 1)[0] + "/" + database
    try:
        from aurora import documents
        from aurora.config import load_settings
        from aurora.db import forget
        from aurora.migrations import upgrade
        from aurora.queue import enqueue
        from aurora.runtime import Runtime, set_runtime

        env = aurora_env(home, AURORA_BROKER_URL=REDIS, AURORA_DATABASE_URL=url)
        runtime = Runtime(load_settings(env))
        upgrade(url)
        set_runtime(runtime)
        workflow = documents.load(MAIL)
        for _ in range(n):
            enqueue(runtime.engine.submit(workflow, "bench").id)

        forget(url)  # this process's idle connections: the poller below has one of its own
        poller = psycopg.connect(url, autocommit=True)
        own = poller.info.backend_pid

        def succeeded() -> int:
            return poller.execute("SELECT count(*) FROM runs WHERE status = 'succeeded'").fetchone()[0]

        def backends() -> list[int]:
            return [r[0] for r in admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> %s",
                                                (database, own))]

        with Procs(env, home) as procs, poller:
            worker = procs.aurora("worker", "-c", str(processes), "-l", "warning")

            def cpu() -> dict[str, float]:
                return {"worker_cpu_ms": _cpu_ms(_tree(worker.pid)), "postgres_cpu_ms": _cpu_ms(backends())}

            rate, per_run = _drain(succeeded, n, cpu)
        set_runtime(None)
        return {"runs_per_s": round(rate), **per_run}
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        cleanup(home)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _median_of(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: round(_median([part[key] for part in parts]), 2) for key in parts[0]}


def compare(n: int = 2000, rounds: int = 3) -> dict[str, Any]:
    """``rounds`` rounds of raw, one process, two processes, with raw once more at the end: each
    round's ratio is its two processes over the mean of the raw figures measured just before and
    just after it (this machine's speed drifts by half within minutes), and the figures are the
    medians of the rounds."""
    import psycopg

    client = redis.Redis.from_url(REDIS)
    os.environ.update(BENCH_BROKER=REDIS)
    try:
        with psycopg.connect(ADMIN_PG, autocommit=True) as admin:
            raws = [_raw(client, n)]
            ones, twos = [], []
            for _ in range(rounds):
                client.flushdb()
                ones.append(_aurora(n, 1, admin))
                client.flushdb()
                twos.append(_aurora(n, 2, admin))
                raws.append(_raw(client, n))
        per_round = [{"one": one["runs_per_s"], "two": two["runs_per_s"], "raw": round((before + after) / 2),
                      "two_over_one": round(two["runs_per_s"] / one["runs_per_s"], 2),
                      "two_over_raw": round(two["runs_per_s"] / ((before + after) / 2), 2)}
                     for one, two, before, after in zip(ones, twos, raws[:-1], raws[1:], strict=True)]
        return {"one_process": _median_of(ones), "two_processes": _median_of(twos),
                "raw_tasks_per_s": round(_median([r["raw"] for r in per_round])),
                "raw_before_after": [round(raws[0]), round(raws[-1])],
                "two_over_one": _median([r["two_over_one"] for r in per_round]),
                "two_over_raw": _median([r["two_over_raw"] for r in per_round]),
                "rounds": per_round, "runs": n,
                "goal": "2 processes >= 1.6x one; >= 0.5x raw; worker <= 3 ms, PostgreSQL <= 1.5 ms per run"}
    finally:
        client.flushdb()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    print(json.dumps(compare(arguments.n, arguments.rounds), indent=2))

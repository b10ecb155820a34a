"""One path or two: what the engine's fast path for a fresh simulated run buys (issue 18, point 4).

A dry run finishes in one of two ways; the variants below switch parts of the fast one off in
this process (by replacing the engine's methods on the instance: a benchmark, not a test), so
that they are measured in one invocation, on the same database, taking turns:

- ``as_is``: the run is planned ahead of the write transaction (route, mode, the simulated call
  and its audit record, no rows read but the run's own; ``pipeline.UNREAD`` abandons a plan
  whose mode would need the adapters' rollouts), then claimed and finished in one statement
  with its events, steps and audit record (``Engine._settle_fresh``, ``run_sql.SETTLE_FRESH``).
- ``no_settle_fresh``: planned ahead, then the general path: the claim transaction (``CLAIM …
  RETURNING``, route, gate, the act step begun), the simulated call after it commits, and a
  second transaction that finishes the run — what every live call does.
- ``general_only``: the general path without the plan ahead.

(Until this benchmark was written, the claim transaction of the general path also wrote a
simulated call's outcome itself: one commit instead of two. Its figures are in
docs/benchmarks.md; it was removed as buying too little for the runs that took it.)

Per dry run (``send_email``): statements and commits (counted by SQLAlchemy events in a first
pass), the worker's CPU (least of the rounds), the time a write transaction is open (on SQLite
the writer lock's hold; on PostgreSQL the outbox locks are held for its end), PostgreSQL's CPU
(its backends, from /proc), runs/s of one process, and runs/s of two processes at once.

Usage: python bench/onepath.py [--pg [URL]] [-n N] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, aurora_env, cleanup, temp_home  # noqa: E402

MAIL = (ROOT / "workflows" / "send_report.yaml").read_bytes()
ADMIN_PG = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
VARIANTS = ("as_is", "no_settle_fresh", "general_only")


def variant_engine(runtime: Any, variant: str) -> Any:
    """An engine of ``runtime`` with the paths of ``variant`` switched off."""
    from aurora.engine import Engine

    engine = Engine(runtime.settings, runtime.db, runtime.policies, runtime.secrets, runtime.limiter)
    if variant == "as_is":
        return engine
    if not hasattr(engine, "_settle_fresh"):
        raise SystemExit(f"{variant}: this engine has no _settle_fresh any more (one path only)")
    engine._settle_fresh = lambda *_args, **_kwargs: None  # type: ignore[method-assign]
    if variant == "general_only":
        engine._plan_ahead = lambda *_args, **_kwargs: None  # type: ignore[method-assign]
    return engine


@contextmanager
def timed_writes(db: Any, spent: list[float]) -> Iterator[None]:
    """Add the time each write transaction of ``db`` is open (enter to commit) to ``spent``."""
    write, write_rows = db.write, db.write_rows

    def wrap(open_: Any) -> Any:
        @contextmanager
        def timed() -> Iterator[Any]:
            started = time.perf_counter()
            with open_() as handle:
                yield handle
            spent.append(time.perf_counter() - started)
        return timed

    db.write, db.write_rows = wrap(write), wrap(write_rows)
    try:
        yield
    finally:
        del db.write, db.write_rows


def _backend_cpu_ms(admin: Any, database: str) -> float:
    from runcost import _backend_cpu_ms as cpu

    return cpu(admin, database)


def _runtime(home: Path, url: str) -> Any:
    from aurora.config import load_settings
    from aurora.runtime import Runtime, set_runtime

    runtime = Runtime(load_settings(aurora_env(home, AURORA_DATABASE_URL=url)))
    set_runtime(runtime)
    return runtime


def _child(home: str, url: str, variant: str, ids: list[str], start: Any, done: Any) -> None:
    """One of two processes executing runs at once (spawned: its own engine and pools)."""
    runtime = _runtime(Path(home), url)
    engine = variant_engine(runtime, variant)
    engine.execute(ids[0])  # warm: pools, the audit key, statement caches
    start.wait()
    for run_id in ids[1:]:
        engine.execute(run_id)
    done.put(time.perf_counter())


def _count(runtime: Any, engine: Any, workflow: Any, n: int) -> dict[str, float]:
    from sqlalchemy import event
    from sqlalchemy.engine.base import OptionEngine

    statements, commits = [0], [0]
    engines = {e for e in (runtime.db.engine, runtime.db._immediate, runtime.db._single_read)
               if not isinstance(e, OptionEngine)}

    def count(*_: Any) -> None:
        statements[0] += 1

    def commit(*_: Any) -> None:
        commits[0] += 1

    ids = [engine.submit(workflow, "bench").id for _ in range(n)]
    for sql_engine in engines:
        event.listen(sql_engine, "before_cursor_execute", count)
        event.listen(sql_engine, "commit", commit)
    try:
        for run_id in ids:
            assert engine.execute(run_id).status == "succeeded"
    finally:
        for sql_engine in engines:
            event.remove(sql_engine, "before_cursor_execute", count)
            event.remove(sql_engine, "commit", commit)
    return {"statements": round(statements[0] / n, 2), "commits": round(commits[0] / n, 2)}


def measure(n: int = 200, pg: str | None = None, rounds: int = 3) -> dict[str, Any]:
    home = temp_home()
    database = f"aurora_bench_{uuid.uuid4().hex[:8]}"
    admin = None
    if pg:
        import psycopg

        admin = psycopg.connect(pg, autocommit=True)
        admin.execute(f'CREATE DATABASE "{database}"')
        url = pg.rsplit("/", 1)[0] + "/" + database
    else:
        url = f"sqlite:///{home / 'aurora.db'}"
    try:
        from aurora import documents
        from aurora.migrations import upgrade

        runtime = _runtime(home, url)
        upgrade(url)
        workflow = documents.load(MAIL)
        engines = {variant: variant_engine(runtime, variant) for variant in VARIANTS}
        for engine in engines.values():  # warm up: caches, the audit key, pooled connections
            for _ in range(20):
                assert engine.execute(engine.submit(workflow, "bench").id).status == "succeeded"
        figures: dict[str, dict[str, Any]] = {v: _count(runtime, e, workflow, n) for v, e in engines.items()}
        samples: dict[str, dict[str, list[float]]] = {v: {"cpu": [], "wall": [], "held": [], "pg": [], "pair": []}
                                                     for v in VARIANTS}
        spawn = multiprocessing.get_context("spawn")
        for _ in range(rounds):
            for variant, engine in engines.items():  # the variants take turns: the machine drifts
                ids = [engine.submit(workflow, "bench").id for _ in range(n)]
                held: list[float] = []
                pg_before = _backend_cpu_ms(admin, database) if admin else 0.0
                with timed_writes(runtime.db, held):
                    cpu, wall = time.process_time(), time.perf_counter()
                    for run_id in ids:
                        engine.execute(run_id)
                    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                s = samples[variant]
                s["cpu"].append(cpu / n)
                s["wall"].append(wall / n)
                s["held"].append(sum(held) / n)
                if admin:
                    s["pg"].append((_backend_cpu_ms(admin, database) - pg_before) / n)
                # two processes at once, each on its own half
                ids = [engine.submit(workflow, "bench").id for _ in range(n + 2)]
                start, done = spawn.Event(), spawn.Queue()
                children = [spawn.Process(target=_child, args=(str(home), url, variant, half, start, done))
                            for half in (ids[: n // 2 + 1], ids[n // 2 + 1:])]
                for child in children:
                    child.start()
                time.sleep(3)  # both imported and warm (spawned children start from nothing)
                began = time.perf_counter()
                start.set()
                ended = max(done.get(timeout=300) for _ in children)
                for child in children:
                    child.join()
                s["pair"].append(n / (ended - began))
        for variant, s in samples.items():
            f = figures[variant]
            f["worker_cpu_ms"] = round(min(s["cpu"]) * 1000, 3)
            f["write_transaction_ms"] = round(min(s["held"]) * 1000, 3)
            f["runs_per_s_one_process"] = round(1 / min(s["wall"]))
            f["runs_per_s_two_processes"] = [round(x) for x in s["pair"]]
            f["runs_per_s_two_processes_median"] = round(statistics.median(s["pair"]))
            if admin:
                f["database_cpu_ms"] = round(min(s["pg"]), 3)
        return {"database": runtime.db.dialect, "runs": n, "rounds": rounds, "load": round(os.getloadavg()[0], 1),
                **figures}
    finally:
        from aurora.db import forget

        forget(url)
        if admin is not None:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            admin.close()
        cleanup(home)


def both(n: int = 200, rounds: int = 3) -> dict[str, Any]:
    """SQLite and PostgreSQL, one after the other (``bench/run.py onepath``)."""
    return {"sqlite": measure(n, None, rounds), "postgresql": measure(n, ADMIN_PG, rounds),
            "goal": "a second path must earn its place"}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pg", nargs="?", const=ADMIN_PG, help="PostgreSQL admin URL (a database is made and dropped)")
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(measure(args.n, args.pg, args.rounds), indent=2))

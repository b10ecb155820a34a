"""What one dry run costs the database: statements, round trips, commits, bytes, CPU per process.

In one process, on a fresh database (PostgreSQL from ``BENCH_DATABASE_URL``'s server, or SQLite),
``n`` one-step dry runs are submitted and then executed by the engine itself (what a Celery child
does per message, without Celery): the statements are counted by a SQLAlchemy event listener in a
first pass, and CPU is measured in a second pass without the listener (a listener costs CPU itself):
this process's ``process_time`` and, on PostgreSQL, the backends' utime+stime from /proc.

Usage: python bench/runcost.py [--pg URL] [-n N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, aurora_env, cleanup, temp_home  # noqa: E402

MAIL = (ROOT / "workflows" / "send_report.yaml").read_bytes()
ADMIN_PG = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")


def _backend_cpu_ms(admin: Any, database: str) -> float:
    """utime + stime of every backend connected to ``database`` (ms), from /proc."""
    pids = [r[0] for r in admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,))]
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            pass
    return total * 1000 / tick


#: the tables a run writes to (their indexes are counted with them)
RUN_TABLES = ("runs", "events", "run_steps", "audit_records")


def _sizes(runtime: Any) -> dict[str, int]:
    """Bytes each table and index of the database takes: on SQLite the pages ``dbstat`` counts
    (the file without its WAL and free pages), on PostgreSQL each table's heap with its TOAST, free
    space and visibility maps (``pg_total_relation_size`` less its indexes), and each index."""
    from sqlalchemy import text

    with runtime.db.engine.connect() as conn:
        if runtime.db.dialect == "postgresql":
            rows = conn.execute(text(
                "SELECT c.relname, coalesce(i.indrelid::regclass::text, c.relname), CASE c.relkind "
                "WHEN 'r' THEN pg_total_relation_size(c.oid) - pg_indexes_size(c.oid) ELSE pg_relation_size(c.oid) END "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "LEFT JOIN pg_index i ON i.indexrelid = c.oid WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')"))
            return {(name if name == table else f"{table}.{name}"): int(size) for name, table, size in rows}
        rows = conn.execute(text("SELECT d.name, coalesce(m.tbl_name, d.name), sum(d.pgsize) FROM dbstat d "
                                 "LEFT JOIN sqlite_master m ON m.name = d.name GROUP BY d.name"))
        return {(name if name == table else f"{table}.{name}"): int(size) for name, table, size in rows}


def _per_run(before: dict[str, int], after: dict[str, int], runs: int) -> dict[str, Any]:
    """Bytes per run, in all and for each table with its indexes."""
    grown = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    tables: dict[str, dict[str, int]] = {}
    for name, size in sorted(grown.items()):
        table, _, index = name.partition(".")
        if table in RUN_TABLES:
            entry = tables.setdefault(table, {"table": 0, "indexes": 0})
            entry["indexes" if index else "table"] += size
            if index:
                entry[index] = size
    return {"database_bytes_per_run": round(sum(grown.values()) / runs),
            "bytes_per_run_by_table": {t: {k: round(v / runs) for k, v in e.items()} for t, e in tables.items()}}


def measure(n: int = 300, pg: str | None = None) -> dict[str, Any]:
    home = temp_home()
    database = f"aurora_bench_{uuid.uuid4().hex[:8]}"
    admin = None
    if pg:
        import psycopg

        admin = psycopg.connect(pg, autocommit=True)
        admin.execute(f'CREATE DATABASE "{database}"')
        url = pg.rsplit("/", 1)[0] + "/" + database + os.environ.get("BENCH_PG_QUERY", "")
    else:
        url = f"sqlite:///{home / 'aurora.db'}"
    try:
        from sqlalchemy import event

        from aurora import documents
        from aurora.config import load_settings
        from aurora.migrations import upgrade
        from aurora.runtime import Runtime, set_runtime

        runtime = Runtime(load_settings(aurora_env(home, AURORA_DATABASE_URL=url)))
        upgrade(url)
        set_runtime(runtime)
        workflow = documents.load(MAIL)
        engine = runtime.engine
        # warm up: caches, the audit key, pooled connections
        for _ in range(20):
            engine.execute(engine.submit(workflow, "bench").id)

        statements: Counter[str] = Counter()
        commits, rollbacks, checkouts = [0], [0], [0]
        from sqlalchemy.engine.base import OptionEngine

        # an engine with other execution options shares its parent's events: listen on the parent
        sql_engines = {e for e in (runtime.db.engine, runtime.db._immediate, runtime.db._single_read)
                       if not isinstance(e, OptionEngine)}

        def count(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
            statements[(statement.split(None, 1)[0].upper() + (" many" if many else "")) if not os.environ.get("BENCH_SQL") else statement[:90]] += 1

        def commit(conn: Any) -> None:
            commits[0] += 1

        def rollback(conn: Any) -> None:
            rollbacks[0] += 1

        def checkout(*_: Any) -> None:
            checkouts[0] += 1

        ids = [engine.submit(workflow, "bench").id for _ in range(n)]
        for sql_engine in sql_engines:
            event.listen(sql_engine, "before_cursor_execute", count)
            event.listen(sql_engine, "commit", commit)
            event.listen(sql_engine, "rollback", rollback)
            event.listen(sql_engine.pool, "checkout", checkout)
        try:
            for run_id in ids:
                engine.execute(run_id)
        finally:
            for sql_engine in sql_engines:
                event.remove(sql_engine, "before_cursor_execute", count)
                event.remove(sql_engine, "commit", commit)
                event.remove(sql_engine, "rollback", rollback)
                event.remove(sql_engine.pool, "checkout", checkout)
        per_run = {k: round(v / n, 2) for k, v in sorted(statements.items())}

        # CPU: the least of five rounds (this machine is shared: others' load only ever adds)
        size_before = _sizes(runtime)
        rounds = []
        for _ in range(5):
            ids = [engine.submit(workflow, "bench").id for _ in range(n // 5)]
            pg_before = _backend_cpu_ms(admin, database) if admin else 0.0
            cpu, wall = time.process_time(), time.perf_counter()
            for run_id in ids:
                engine.execute(run_id)
            rounds.append(((time.process_time() - cpu) / len(ids), (time.perf_counter() - wall) / len(ids),
                           (_backend_cpu_ms(admin, database) - pg_before) / len(ids) if admin else None))
        cpu = min(r[0] for r in rounds) * n
        wall = min(r[1] for r in rounds) * n
        pg_cpu = min(r[2] for r in rounds) * n if admin else None
        # submissions of the same runs, for the bytes of a whole run (submitted and finished)
        sub_cpu = time.process_time()
        more = [engine.submit(workflow, "bench").id for _ in range(n)]
        sub_cpu = time.process_time() - sub_cpu
        for run_id in more:
            engine.execute(run_id)
        size_after = _sizes(runtime)
        return {
            "database": runtime.db.dialect,
            "runs": n,
            "statements_per_run": per_run,
            "statements_total_per_run": round(sum(statements.values()) / n, 2),
            "commits_per_run": round(commits[0] / n, 2),
            "rollbacks_per_run": round(rollbacks[0] / n, 2),
            "checkouts_per_run": round(checkouts[0] / n, 2),
            "worker_cpu_ms_per_run": round(cpu * 1000 / n, 3),
            "submit_cpu_ms_per_run": round(sub_cpu * 1000 / n, 3),
            "wall_ms_per_run": round(wall * 1000 / n, 3),
            "database_cpu_ms_per_run": round(pg_cpu / n, 3) if pg_cpu is not None else None,
            # the rounds' runs and the last ones: 5 * (n // 5) + n
            **_per_run(size_before, size_after, 5 * (n // 5) + n),
        }
    finally:
        from aurora.db import forget

        forget(url)
        if admin is not None:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            admin.close()
        cleanup(home)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pg", nargs="?", const=ADMIN_PG, help="PostgreSQL admin URL (a database is made and dropped)")
    parser.add_argument("-n", type=int, default=300)
    args = parser.parse_args()
    print(json.dumps(measure(args.n, args.pg), indent=2))

"""Reads as history grows: 10,000 / 100,000 / 1,000,000 stored runs, on SQLite and PostgreSQL.

``generate`` writes N settled one-step dry runs with what the engine stores for each — the run, its
three events, three steps and an audit record chained and sealed with the node's key (``aurora
audit verify`` passes) — plus a few runs awaiting approval spread through history, in bulk (COPY on
PostgreSQL, executemany on SQLite), and sets the metric tallies as migration 0013_scale would.

``measure`` then serves the database with ``aurora serve`` (gunicorn, 2 workers) and an ``aurora
worker``, and takes the p99 of each read the issue names, sequentially from one client: GET
/workflows (first page, a deep cursor page, each filter), GET /workflows/<id>, GET /events?since=,
/federation/events pages, /approvals, /metrics, and submit → succeeded as a client sees it. Every
statement those requests send is caught in-process and EXPLAINed; a plan that scans a growing
table without an index is reported.

With ``--prune``, the largest history is then pruned (``aurora prune --before``, its first tenth)
and checked: ``aurora audit verify`` passes, a federation cursor inside the pruned range still
pages, ``aurora status`` of a pruned run names its archive.

Usage: python bench/history.py [--pg] [--runs 10000 100000 ...] [--requests 200] [--prune]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import requests  # noqa: E402
from harness import ROOT, Procs, aurora_env, cleanup, free_port, percentile, temp_home, wait_http  # noqa: E402

REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/12")
ADMIN_PG = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
MAIL = (ROOT / "workflows" / "send_report.yaml").read_bytes()
NAMES = [("send_report", "send_email"), ("weekly_digest", "send_email"), ("classify_ticket", "analyse"),
         ("crm_sync", "post_social")]
#: runs awaiting approval, spread through history (the rest succeeded; every 50th failed)
WAITING = 20
#: the first generated run's created_at (the others follow 2 s apart)
START = datetime(2026, 1, 1, tzinfo=UTC)
GROWING = ("runs", "events", "run_steps", "audit_records", "approvals")
ROWID = {"runs": "pk", "events": "seq", "run_steps": "pk", "audit_records": "pk", "approvals": "pk"}


def _doc(name: str, goal: str) -> dict[str, Any]:
    return {"name": name, "category": "business", "origin": "bench", "type": "task", "goal": goal,
            "payload": {"adapter": "mailgun_adapter", "to": "kunde@example.com", "subject": "Monatsbericht",
                        "template": "monthly_report"}}


def rows(n: int, node: str, key: bytes, chunk: int = 20_000) -> Iterator[dict[str, list[tuple]]]:
    """The rows of ``n`` runs, in the tables' column orders below, ``chunk`` runs at a time (a
    million runs' rows would not fit in memory at once)."""
    from aurora.audit import GENESIS, _canonical, _seal
    from aurora.db import compact_json as dumps
    from aurora.run_results import stored

    rng = random.Random(21)
    start = START
    out: dict[str, list[tuple]] = {t: [] for t in ("runs", "events", "run_steps", "audit_records")}
    prev, seq, audits = GENESIS, 0, 0
    waiting_at = set(range(n // WAITING // 2, n, max(1, n // WAITING)))
    for pk in range(1, n + 1):
        if len(out["runs"]) >= chunk:
            yield out
            out = {t: [] for t in out}
        rid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        name, goal = NAMES[pk % len(NAMES)]
        created = start + timedelta(seconds=pk * 2)
        finished = created + timedelta(milliseconds=4)
        document = dumps(_doc(name, goal))
        waiting = pk in waiting_at
        failed = not waiting and pk % 50 == 0
        status = "awaiting_approval" if waiting else "failed" if failed else "succeeded"
        request = {"method": "POST", "url": "https://api.mailgun.net/v3/mg.example.com/messages",
                   "form": {"to": ["kunde@example.com"], "subject": "Monatsbericht", "v:aurora_run_id": rid}}
        # as the engine stores it: the request is the audit record's (aurora.run_results)
        result = None if waiting or failed else dumps(stored(
            {"dry_run": True, "msg": "Simulated mail send", "adapter": "mailgun", "operation": "send",
             "mode": "simulated", "reason": "policy: dry_run is true", "request": request},
            {"request": request, "response": None}))
        error = dumps({"type": "adapter_error", "message": "the call failed"}) if failed else None
        out["runs"].append((pk, rid, name, goal, document, hashlib.sha256(document.encode()).hexdigest(), status,
                            "gate" if waiting else "act", 1 if waiting else 0, result, error, "bench", "bench",
                            0 if waiting else 1, created, created, created, None if waiting else created,
                            None if waiting else finished, created + timedelta(days=3650) if waiting else None))
        types = [("run.queued", {"name": name, "goal": goal, "submitted_by": "bench"}),
                 ("run.running", {"attempt": 1, "worker": "bench:1"})]
        if not waiting:
            audits += 1
            audit_pk = audits
            fields = {"created_at": finished, "run_id": rid, "adapter": "mailgun", "operation": "send",
                      "mode": "simulated", "reason": "policy: dry_run is true", "request": request,
                      "outcome": "error" if failed else "ok", "response": None, "duration_ms": 0.0}
            sealed = _seal(key, prev, _canonical(fields))
            out["audit_records"].append((audit_pk, finished, rid, "mailgun", "send", "simulated",
                                         "policy: dry_run is true", dumps(request), fields["outcome"], None,
                                         0.0, prev, sealed))
            prev = sealed
            types.append((f"run.{status}", {"mode": "simulated", "audit": audit_pk}))
            steps = [("route", {"adapter": "mailgun"}), ("gate", {"state": "open"}),
                     ("act", {"audit": audit_pk, "ok": not failed, "mode": "simulated"})]
        else:
            types.append(("run.awaiting_approval", {"required": 1}))
            steps = [("route", {"adapter": "mailgun"})]
        for type_, data in types:
            seq += 1
            # as events.append stores a run's own event: with the run's pk (0014_bytes)
            out["events"].append((seq, str(uuid.UUID(int=rng.getrandbits(128), version=4)), node, type_, rid,
                                  pk, created, dumps(data)))
        for step, result_ in steps:
            out["run_steps"].append((pk, step, "done", 1, dumps(result_), created, finished))
    yield out


COLUMNS = {
    "runs": ("pk", "id", "name", "goal", "document", "document_hash", "status", "step", "approvals_required",
             "result", "error", "submitted_by", "submitted_by_person", "attempts", "created_at", "updated_at",
             "enqueued_at", "started_at", "finished_at", "gate_deadline"),
    "events": ("seq", "id", "origin", "type", "run_id", "run_pk", "created_at", "data"),
    "run_steps": ("run_pk", "step", "status", "attempt", "result", "started_at", "finished_at"),
    "audit_records": ("pk", "created_at", "run_id", "adapter", "operation", "mode", "reason", "request", "outcome",
                      "response", "duration_ms", "prev_hash", "hash"),
}


def generate(url: str, n: int, node: str, key: bytes) -> float:
    """Write ``n`` runs into the (migrated, empty) database at ``url``; seconds taken."""
    started = time.perf_counter()
    if url.startswith("sqlite"):
        import sqlite3

        from sqlalchemy.engine import make_url

        def sqlite_value(v: Any) -> Any:
            return v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(v, datetime) else v

        conn = sqlite3.connect(make_url(url).database)
        for data in rows(n, node, key):
            with conn:
                for table, columns in COLUMNS.items():
                    marks = ", ".join("?" * len(columns))
                    conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                                     ([sqlite_value(v) for v in row] for row in data[table]))
        conn.close()
    else:
        import psycopg

        with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
            with conn.cursor() as cur:
                for data in rows(n, node, key):
                    for table, columns in COLUMNS.items():
                        with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                            for row in data[table]:
                                copy.write_row(row)
                for table, column in (("runs", "pk"), ("events", "seq"), ("audit_records", "pk")):
                    cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                                f"(SELECT max({column}) FROM {table}))")
            conn.execute("ANALYZE")
    _retally(url)
    return time.perf_counter() - started


def _retally(url: str) -> None:
    """The metric tallies as migration 0013_scale takes them (here after a bulk load)."""
    import importlib

    from sqlalchemy import create_engine, text

    migration = importlib.import_module("aurora.migrations.versions.0013_scale_history")
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM metric_tallies"))

        class Op:  # the two alembic calls the migration makes
            @staticmethod
            def get_bind() -> Any:
                return conn

            @staticmethod
            def bulk_insert(table: Any, values: list[dict[str, Any]]) -> None:
                conn.execute(table.insert(), values)

            @staticmethod
            def add_column(*_: Any) -> None:
                pass

            @staticmethod
            def create_table(name: str, *columns: Any) -> Any:
                from sqlalchemy import MetaData, Table

                return Table(name, MetaData(), *columns)

        migration.op = Op
        migration.upgrade()
    engine.dispose()


def _explain(runtime: Any, statements: list[tuple[str, Any]]) -> list[str]:
    """Plans that read a growing table without an index."""
    from sqlalchemy import text

    bad: list[str] = []
    with runtime.db.engine.connect() as conn:
        # an empty table is read without its index (nothing to gain): only tables with rows count
        filled = {t for t in GROWING if conn.execute(text(f"SELECT 1 FROM {t} LIMIT 1")).first()}
        for statement, params in statements:
            if not statement.lstrip().upper().startswith("SELECT"):
                continue
            if runtime.db.dialect == "sqlite":
                plan = [r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)]
                # "SCAN runs" of "ORDER BY runs.pk ... LIMIT" walks the rowid b-tree from one end
                scans = [p for p in plan if p.startswith("SCAN ") and p.split()[1] in filled and "USING" not in p
                         and not (f"ORDER BY {p.split()[1]}.{ROWID[p.split()[1]]}" in statement and "LIMIT" in statement)]
            else:
                plan = [r[0] for r in conn.exec_driver_sql("EXPLAIN " + statement, params)]
                scans = [p.strip() for p in plan if "Seq Scan on" in p and p.split("Seq Scan on ")[1].split()[0] in filled]
            if scans and f"{statement[:200]}: {scans}" not in bad:
                bad.append(f"{statement[:200]}: {scans}")
    return [" ".join(b.split()) for b in bad]


@contextmanager
def _broker_turn() -> Iterator[None]:
    """Invocations that share a broker take turns serving: each one's worker would take the
    other's runs from the one queue and find no such run in its database."""
    import fcntl
    import tempfile

    name = hashlib.sha256(REDIS.encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"aurora-bench-history-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _prune_check(procs: Procs, env: dict[str, str], base: str, http: requests.Session, admin: dict[str, str],
                 peer: dict[str, str], n: int) -> dict[str, Any]:
    """``aurora prune --before`` the first tenth of history (the generated runs finish 2 s apart
    from 2026-01-01): the audit chain still verifies, a federation cursor inside the pruned range
    still pages (what stays after it, in order: the runs awaiting approval), and ``aurora status``
    of a pruned run names its archive."""
    import subprocess

    cutoff = START + timedelta(seconds=2 * (n // 10))
    cursor = 3 * (n // 20)  # an event of a run in the middle of the pruned range (three a run)

    def page(since: int) -> list[dict[str, Any]]:
        response = http.get(f"{base}/federation/events?since={since}&limit=1000", headers=peer, timeout=60)
        assert response.status_code == 200, response.text[:200]
        return response.json()["events"]

    before = page(cursor)
    runs = {rid: http.get(f"{base}/workflows/{rid}", headers=admin, timeout=30).json()
            for rid in {e["run_id"] for e in before}}
    # what prune takes: settled, finished before the cutoff
    gone = {rid for rid, r in runs.items() if r["status"] in _settled() and r.get("finished_at")
            and datetime.fromisoformat(r["finished_at"]) < cutoff}
    started = time.perf_counter()
    done = procs.run("prune", "--before", cutoff.isoformat())
    took = time.perf_counter() - started
    archive = done.rsplit(" into ", 1)[1].strip()
    verified = procs.run("audit", "verify")
    after = page(cursor)
    seqs = [e["seq"] for e in after]
    top = max(e["seq"] for e in before)
    kept = [e["seq"] for e in before if e["run_id"] not in gone]
    assert seqs == sorted(seqs) and all(s > cursor for s in seqs), "a cursor page out of order"
    assert [s for s in seqs if s <= top] == kept, "the cursor page after pruning is not what stayed"
    pruned = next(iter(gone))
    run = http.get(f"{base}/workflows/{pruned}", headers=admin, timeout=30).json()
    status = subprocess.run([sys.executable, "-m", "aurora", "status", pruned], capture_output=True, text=True,
                            env={**env, "AURORA_URL": base, "AURORA_TOKEN": admin["Authorization"].split()[1]})
    assert status.returncode == 0 and f"archived in {archive}" in status.stderr, status.stderr[-500:]
    assert run.get("archive") == archive, run.get("archive")
    return {"before": cutoff.isoformat(), "output": done.strip(), "seconds": round(took, 1),
            "audit_verify": verified.strip().splitlines()[-1] if verified.strip() else "",
            "cursor": cursor, "cursor_page_events": len(after), "cursor_page_before_events": len(before),
            "cursor_page_kept_from_before": len(kept),
            "status_names_archive": True, "load_average": _load()}


def _settled() -> set[str]:
    from aurora import tallies

    return {s.value for s in tallies.SETTLED}


def measure(n: int, pg: bool, requests_per: int = 200, prune: bool = False) -> dict[str, Any]:
    home = temp_home()
    database = f"aurora_hist_{uuid.uuid4().hex[:8]}"
    admin = None
    if pg:
        import psycopg

        admin = psycopg.connect(ADMIN_PG, autocommit=True)
        admin.execute(f'CREATE DATABASE "{database}"')
        url = ADMIN_PG.rsplit("/", 1)[0] + "/" + database
    else:
        url = f"sqlite:///{home / 'aurora.db'}"
    policy = json.loads((ROOT / "policy" / "batch8_policy.json").read_text())
    policy.update(federation_enabled=True, federation_nodes=["peer"])
    (home / "policy.json").write_text(json.dumps(policy))
    env = aurora_env(home, AURORA_DATABASE_URL=url, AURORA_BROKER_URL=REDIS, AURORA_POLICY_FILE=str(home / "policy.json"))
    try:
        from sqlalchemy import event

        from aurora import keys
        from aurora.config import load_settings
        from aurora.db import forget
        from aurora.federation import tokens
        from aurora.migrations import upgrade
        from aurora.models import Role
        from aurora.runs import encode_cursor
        from aurora.runtime import Runtime, set_runtime

        upgrade(url)
        runtime = Runtime(load_settings(env))
        set_runtime(runtime)
        took = generate(url, n, "bench", runtime.db.audit_key())
        admin_key = keys.create(runtime.db, "admin", Role.ADMIN)
        peer_token = tokens.create(runtime.db, "peer")
        rng = random.Random(4)
        reads = {
            "list first page": "/workflows",
            "list deep cursor": f"/workflows?cursor={encode_cursor(n // 10)}",
            "list status=failed": "/workflows?status=failed",
            "list status=awaiting_approval": "/workflows?status=awaiting_approval",
            "list goal=analyse": "/workflows?goal=analyse",
            "list name=crm_sync": "/workflows?name=crm_sync",
            "list name=crm_sync deep": f"/workflows?name=crm_sync&cursor={encode_cursor(n // 10)}",
            "one run": None,  # a random old run each time
            "events since": f"/events?since={n}",
            "federation page": f"/federation/events?since={n}&limit=100",
            "approvals": "/approvals",
            "metrics": "/metrics",
        }
        from sqlalchemy import select

        from aurora.models import Run

        with runtime.db.read() as session:
            some_ids = list(session.scalars(select(Run.id).where(Run.pk.in_(
                [rng.randint(1, n) for _ in range(50)]))))

        def path_of(name: str) -> str:
            return reads[name] or f"/workflows/{rng.choice(some_ids)}"

        def headers_of(name: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {peer_token if name.startswith('federation') else admin_key}"}

        # every statement each read sends, caught in this process, then EXPLAINed
        from aurora.web import create_app

        caught: list[tuple[str, Any]] = []
        listener = lambda conn, cursor, statement, params, context, many: caught.append((statement, params))  # noqa: E731
        event.listen(runtime.db.engine, "before_cursor_execute", listener)
        test_client = create_app({"TESTING": True}).test_client()
        for name in reads:
            assert test_client.get(path_of(name), headers=headers_of(name)).status_code == 200, name
        event.remove(runtime.db.engine, "before_cursor_execute", listener)
        unindexed = _explain(runtime, caught)
        forget(url)

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with _broker_turn(), Procs(env, home) as procs:
            procs.aurora("serve", "--port", str(port), "--workers", "2")
            procs.aurora("worker", "-c", "1", "-l", "warning")
            wait_http(base, workers=True)
            load = {"start": _load()}
            p99: dict[str, float] = {}
            p50: dict[str, float] = {}
            with requests.Session() as http:
                for name in reads:
                    times = []
                    for i in range(requests_per + 10):
                        started = time.perf_counter()
                        response = http.get(base + path_of(name), headers=headers_of(name), timeout=30)
                        if i >= 10:  # warm-up
                            times.append((time.perf_counter() - started) * 1000)
                        assert response.status_code == 200, (name, response.text[:200])
                    p99[name] = round(percentile(times, 99), 2)
                    p50[name] = round(percentile(times, 50), 2)
                done = []
                # submit and wait (Prefer: wait), as many times as each read: one request, no polling
                # beside the run on the same cores, and a p99 that is not simply the slowest of 50
                submit = {**headers_of("submit"), "Content-Type": "application/yaml", "Prefer": "wait=30"}
                for i in range(requests_per + 10):
                    started = time.perf_counter()
                    run = http.post(base + "/workflows", data=MAIL, headers=submit, timeout=60).json()
                    assert run["status"] == "succeeded", f"run {run.get('id')} ended {run.get('status')}"
                    if i >= 10:
                        done.append((time.perf_counter() - started) * 1000)
                p99["submit to succeeded"] = round(percentile(done, 99), 2)
                p50["submit to succeeded"] = round(percentile(done, 50), 2)
                load["end"] = _load()
                pruned = _prune_check(procs, env, base, http, headers_of("admin"), headers_of("federation"), n) \
                    if prune else None
        set_runtime(None)
        return {"database": "postgresql" if pg else "sqlite", "runs": n, "generate_s": round(took, 1),
                "p99_ms": p99, "p50_ms": p50, "unindexed_plans": unindexed, "load_average": load,
                **({"prune": pruned} if pruned else {})}
    finally:
        from aurora.db import forget

        forget(url)
        if admin is not None:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            admin.close()
        cleanup(home)


def flat(n_values: list[int], pg: bool, requests_per: int, prune: bool = False) -> dict[str, Any]:
    """Each size in turn; every p99 beside the smallest size's (``prune``: then check ``aurora
    prune`` on the largest)."""
    results = [measure(n, pg, requests_per, prune and n == max(n_values)) for n in n_values]
    base = results[0]["p99_ms"]
    for result in results[1:]:
        result["ratio_to_first"] = {k: round(v / base[k], 2) for k, v in result["p99_ms"].items()}
        result["p50_ratio_to_first"] = {k: round(v / results[0]["p50_ms"][k], 2)
                                        for k, v in result["p50_ms"].items()}
    return {"sizes": results, "goal": "p99 within 2x of the 10,000-run figure; an index for each read"}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pg", action="store_true", help="PostgreSQL (BENCH_PG_ADMIN) instead of SQLite")
    parser.add_argument("--runs", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--prune", action="store_true",
                        help="then prune the first tenth of the largest history and check the audit chain, "
                             "a federation cursor and `aurora status` of a pruned run")
    args = parser.parse_args()
    print(json.dumps(flat(args.runs, args.pg, args.requests, args.prune), indent=2))

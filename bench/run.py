"""Run every benchmark, print the figures, and write them to docs/benchmarks.md.

Usage: python bench/run.py [NAME ...]   (names: submissions latency throughput memory transports)
Needs Redis on 127.0.0.1:6379 (database 12 is flushed) or BENCH_REDIS.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import spine  # noqa: E402
import transports  # noqa: E402

BENCHES = {
    "submissions": spine.submissions,
    "latency": spine.latency,
    "throughput": spine.throughput,
    "memory": spine.memory,
    "transports": transports.compare,
}
DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def main(names: list[str]) -> None:
    results = {}
    for name in names or list(BENCHES):
        started = time.perf_counter()
        results[name] = BENCHES[name]()
        print(f"{name:<12} {json.dumps(results[name])}  ({time.perf_counter() - started:.0f} s)", flush=True)
    if not names:
        write(results)


def write(results: dict) -> None:
    lines = [
        "# Benchmarks",
        "",
        f"Latest run: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, `make bench` on {os.cpu_count()} cores,"
        f" Python {platform.python_version()}. Each figure stands beside a baseline measured in the same run.",
        "",
        "| Benchmark | Aurora | Baseline | Ratio | Goal |",
        "|---|---|---|---|---|",
    ]
    s, lat, thr, mem = (results.get(k, {}) for k in ("submissions", "latency", "throughput", "memory"))
    for clients, row in (s or {}).get("by_clients", {}).items():
        lines.append(f"| submissions through `POST /workflows` (SQLite + Redis), {clients} client(s) |"
                     f" {row['aurora_per_s']}/s | {row['baseline_per_s']}/s (bare Flask: parse + validate) |"
                     f" {row['ratio']} | {s['goal']} |")
    if lat:
        lines.append(f"| submit → succeeded, dry-run `send_email`, Redis, 1 worker | p50 {lat['aurora_p50_ms']} ms,"
                     f" p95 {lat['aurora_p95_ms']} ms | raw Celery no-op round trip p50 {lat['raw_p50_ms']} ms,"
                     f" p95 {lat['raw_p95_ms']} ms | {lat['ratio_p50']}× | {lat['goal']} |")
    if thr:
        lines.append(f"| 5,000 queued dry-run runs, 2 worker processes | {thr['aurora_runs_per_s']} runs/s |"
                     f" raw Celery no-op {thr['raw_tasks_per_s']} tasks/s | {thr['ratio']} | {thr['goal']} |")
    if mem:
        lines.append(f"| idle stack RSS (gunicorn 2 workers + Celery worker 2 processes + beat) |"
                     f" {mem['idle_stack_rss_mb']} MB | — | — | {mem['goal']} |")
    t = results.get("transports")
    if t:
        lines.append(f"| embedded broker: 500 no-op tasks, 2 processes | filesystem {t['filesystem_s']} s |"
                     f" sqla+sqlite {t['sqlalchemy_s']} s | {t['ratio']} | choose the faster |")
    lines += ["", "Raw figures:", "", "```json", json.dumps(results, indent=2), "```", ""]
    DOC.write_text("\n".join(lines))
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""The KI-router's speed, beside a literal substring matcher over the same rules.

1. decisions per second on one core for 10-word texts (goal >= 20,000/s);
2. ``POST /route`` latency p50/p99 at 200 requests per second (goal p99 < 5 ms), from a Python
   client (``http_latency``) and from wrk beside bare Flask (``http_wrk``; ``python bench/router.py``).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests
from harness import ROOT, Procs, aurora_env, cleanup, free_port, gunicorn, percentile, temp_home, wait_http, wait_port


def _texts(count: int, words_per_text: int = 10) -> list[str]:
    vocabulary = []
    for line in (ROOT / "tests" / "data" / "routing_eval.jsonl").read_text().splitlines():
        vocabulary += json.loads(line)["text"].split()
    rng = random.Random(7)
    return [" ".join(rng.choice(vocabulary) for _ in range(words_per_text)) for _ in range(count)]


def decisions() -> dict[str, Any]:
    from aurora.policy import parse_policy
    from aurora.router import Rules, fold, route

    policy = parse_policy((ROOT / "policy" / "batch8_policy.json").read_text())
    rules = Rules.from_policy(policy.routing, policy.version)
    texts = _texts(5000)
    literal = [(r.engine, [fold(f) for k in r.keywords for f in k.forms]) for r in rules.rules]

    def substring(text: str) -> str:
        lowered = text.lower()
        scores = {engine: sum(1 for kw in kws if kw in lowered) for engine, kws in literal}
        return max(scores, key=scores.get)

    def rate(fn: Any) -> float:
        for text in texts[:500]:
            fn(text)
        best = 0.0
        for _ in range(3):
            started = time.perf_counter()
            for text in texts:
                fn(text)
            best = max(best, len(texts) / (time.perf_counter() - started))
        return best

    ours = rate(lambda text: route(text, rules))
    base = rate(substring)
    return {"router_per_s": round(ours), "substring_per_s": round(base), "ratio": round(ours / base, 2),
            "goal": ">= 20000/s"}


def _wrk(url: str, token: str, bodies: Path, seconds: int, rate: int = 200, connections: int = 8,
         cpu: str | None = None) -> dict[str, Any]:
    """wrk (a C load generator, outside any Python interpreter) offering ``rate`` requests/s on a
    schedule (bench/route.lua); its latency percentiles (ms), the rate it reached and the share of
    requests that left later than their slot (each connection was still waiting for an answer)."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(ROOT / "bench" / "route.lua"),
               url]
    if cpu is not None and shutil.which("taskset"):
        command = ["taskset", "-c", cpu, *command]
    env = {**os.environ, "ROUTE_BODIES": str(bodies), "ROUTE_TOKEN": token, "ROUTE_RATE": str(rate)}
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode or "status " in out.stderr:
        raise RuntimeError(f"wrk failed: {out.stderr[-500:]} {out.stdout[-500:]}")
    percentiles = {}
    for line in out.stdout.splitlines():
        found = re.match(r"\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)", line)
        if found:
            value = float(found.group(2)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(3)]
            percentiles[found.group(1)] = round(value, 2)
    reached = float(re.search(r"Requests/sec:\s+([\d.]+)", out.stdout).group(1))  # type: ignore[union-attr]
    sent, late = (int(n) for n in re.search(r"route: sent (\d+) late (\d+)", out.stdout).groups())  # type: ignore[union-attr]
    return {"rate_per_s": round(reached), "p50_ms": percentiles["50"], "p99_ms": percentiles["99"],
            "late_pct": round(100 * late / max(sent, 1), 1)}


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) spent so far by a process and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]), []).append(
                    int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        stack.extend(children.get(current, []))
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def _measured(server: Any, url: str, token: str, bodies: Path, seconds: int, cpu: str | None,
              rate: int = 200) -> dict[str, Any]:
    before = _tree_cpu_s(server.pid)
    figures = _wrk(url, token, bodies, seconds, rate=rate, cpu=cpu)
    spent = _tree_cpu_s(server.pid) - before
    figures["server_cpu_ms_per_request"] = round(spent * 1000 / max(figures["rate_per_s"] * seconds, 1), 3)
    return figures


#: what is measured, in turns: Aurora as `aurora serve` runs it (gunicorn, uvicorn worker,
#: aurora/web/asgi.py), the same app under gunicorn's threaded worker, and bare Flask (gthread)
WRK_SERVERS = ("aurora", "aurora_gthread", "bare_flask")


def http_wrk(seconds: int = 15, web_workers: int = 2, rounds: int = 2, rate: int = 200) -> dict[str, Any]:
    """``POST /route`` at ``rate`` requests/s offered by wrk, beside bare Flask under gunicorn
    (gthread, the same workers), measured the same way in the same run: all three servers are
    started first, then measured in turns, ``rounds`` times (the figures are the rounds' ranges).
    With ``taskset`` the servers run on core 0 and wrk on core 1 (other work on the machine still
    shares them: the load average before and after is recorded)."""
    if not shutil.which("wrk"):
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    home = temp_home()
    try:
        bodies = home / "bodies.jsonl"
        bodies.write_text("\n".join(json.dumps({"text": t}) for t in _texts(500)) + "\n")
        env = aurora_env(home)
        pin = ["taskset", "-c", "0"] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []
        wrk_cpu = "1" if pin else None
        load_before = round(os.getloadavg()[0], 1)
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name in WRK_SERVERS}
        with Procs(env, home) as procs, Procs(env, ROOT / "bench") as bare:
            procs.run("db", "upgrade")
            key = procs.run("keys", "create", "bench", "--role", "viewer").strip()
            servers: dict[str, tuple[Any, str, str]] = {}
            port = free_port()
            servers["aurora"] = (procs.start(*pin, sys.executable, "-m", "aurora", "serve", "--port", str(port),
                                             "--workers", str(web_workers)), f"http://127.0.0.1:{port}", key)
            port = free_port()
            servers["aurora_gthread"] = (procs.start(*pin, *gunicorn(port, "aurora.web.wsgi:app", home, workers=web_workers,
                                                                     threads=8)), f"http://127.0.0.1:{port}", key)
            port = free_port()
            servers["bare_flask"] = (bare.start(*pin, *gunicorn(port, "bare_route_app:app", ROOT / "bench",
                                                                workers=web_workers)), f"http://127.0.0.1:{port}", "")
            for name, (_, url, token) in servers.items():
                if name == "bare_flask":
                    wait_port(int(url.rsplit(":", 1)[1]))
                else:
                    wait_http(url)
                _wrk(url, token, bodies, 3, rate=rate, cpu=wrk_cpu)  # warm-up
            for _ in range(rounds):
                for name, (server, url, token) in servers.items():
                    rows[name].append(_measured(server, url, token, bodies, seconds, wrk_cpu, rate))
        figures: dict[str, Any] = {name: _ranges(measured) for name, measured in rows.items()}
        figures["ratio_p99"] = [round(a["p99_ms"] / b["p99_ms"], 2)
                                for a, b in zip(rows["aurora"], rows["bare_flask"], strict=True)]
        figures.update({"pinned": bool(pin), "offered_per_s": rate, "seconds": seconds, "rounds": rounds,
                        "load_average": [load_before, round(os.getloadavg()[0], 1)], "goal": "p99 < 5 ms at 200/s"})
        return figures
    finally:
        cleanup(home)


def _ranges(measured: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure of the rounds as [lowest, highest]."""
    return {key: [min(m[key] for m in measured), max(m[key] for m in measured)] for key in measured[0]}


def http_latency(rate_per_s: int = 200, seconds: float = 10.0) -> dict[str, Any]:
    home = temp_home()
    try:
        env = aurora_env(home)
        with Procs(env, home) as procs:
            procs.run("db", "upgrade")
            key = procs.run("keys", "create", "bench", "--role", "viewer").strip()
            port = free_port()
            procs.aurora("serve", "--port", str(port), "--workers", "2")
            url = f"http://127.0.0.1:{port}"
            wait_http(url)
            texts = _texts(500)
            local = threading.local()
            latencies: list[float] = []
            lock = threading.Lock()

            def one(text: str) -> None:
                session = getattr(local, "session", None) or requests.Session()
                local.session = session
                started = time.perf_counter()
                response = session.post(url + "/route", json={"text": text},
                                        headers={"Authorization": f"Bearer {key}"}, timeout=5)
                elapsed = (time.perf_counter() - started) * 1000
                assert response.status_code == 200, (response.status_code, response.text[:300])
                with lock:
                    latencies.append(elapsed)

            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(16) as pool:
                for text in texts[:100]:  # warm-up
                    pool.submit(one, text).result()
                latencies.clear()
                total = int(rate_per_s * seconds)
                started = time.perf_counter()
                futures = []
                for i in range(total):  # open loop: requests leave on schedule, whatever the answers do
                    delay = started + i / rate_per_s - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    futures.append(pool.submit(one, texts[i % len(texts)]))
                for future in futures:
                    future.result()
                achieved = total / (time.perf_counter() - started)
        return {"rate_per_s": round(achieved), "p50_ms": round(percentile(latencies, 50), 2),
                "p99_ms": round(percentile(latencies, 99), 2), "goal": "p99 < 5 ms at 200/s"}
    finally:
        cleanup(home)


if __name__ == "__main__":
    import argparse

    import run

    parser = argparse.ArgumentParser(description="POST /route at a fixed rate, measured by wrk, beside bare Flask")
    parser.add_argument("--seconds", type=int, default=15, help="each measurement (default 15)")
    parser.add_argument("--rounds", type=int, default=2, help="turns of the three servers (default 2)")
    parser.add_argument("--rate", type=int, default=200, help="requests/s offered (default 200)")
    parser.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md alone")
    options = parser.parse_args()
    figures = http_wrk(options.seconds, rounds=options.rounds, rate=options.rate)
    print(json.dumps(figures, indent=2))
    if not options.no_record:
        run.record("route_wrk", figures)

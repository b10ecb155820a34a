"""The KI-router's speed, beside a literal substring matcher over the same rules.

1. decisions per second on one core for 10-word texts (goal >= 20,000/s);
2. ``POST /route`` latency p50/p99 at 200 requests per second (goal p99 < 5 ms).
"""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Any

import requests
from harness import ROOT, Procs, aurora_env, cleanup, free_port, percentile, temp_home, wait_http


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

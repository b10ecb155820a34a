"""Replicate 100,000 events from one node to another over HTTP (goal >= 5,000 events/s), beside
the time to read the same rows locally. Every event is signed by its origin (Ed25519, when served)
and verified by the puller before it is stored."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from harness import ROOT, Procs, aurora_env, cleanup, free_port, temp_home, wait_http


def _crypto_us(sample: list[dict[str, Any]]) -> float:
    """The same invocation's price of the crypto alone: sign one event (the origin) and verify it
    (the puller), in microseconds per event."""
    from datetime import datetime

    from aurora.federation import identity, signing

    key = identity.Identity("bench", temp_home() / "bench_identity.pem")
    public = key.private.public_key()
    started = time.perf_counter()
    for e in sample:
        message = signing.canonical(e["id"], e["origin"], e["seq"], e["type"], e["run_id"],
                                    datetime.fromisoformat(e["created_at"]), e["data"])
        assert identity.valid(public, key.sign(message), message)
    return round((time.perf_counter() - started) / len(sample) * 1e6, 1)


def _group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) of every live process in a process group, from /proc."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, …, utime (11), stime (12)
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def replicate(count: int = 100_000) -> dict[str, Any]:
    from sqlalchemy import select

    from aurora import events
    from aurora.config import load_settings
    from aurora.federation import registry
    from aurora.federation.sync import Syncer
    from aurora.migrations import upgrade
    from aurora.models import Event, utcnow
    from aurora.runtime import Runtime, set_runtime

    home_a, home_b = temp_home(), temp_home()
    try:
        policy = json.loads((ROOT / "policy" / "batch8_policy.json").read_text())
        policy.update(federation_enabled=True, federation_nodes=["bench-a", "bench-b"])
        policy["federation"].update(page_size=1000, max_pages=100_000)
        for home in (home_a, home_b):
            (home / "policy.json").write_text(json.dumps(policy))
        env_a = aurora_env(home_a, AURORA_NODE_NAME="bench-a", AURORA_POLICY_FILE=str(home_a / "policy.json"))
        env_b = aurora_env(home_b, AURORA_NODE_NAME="bench-b", AURORA_POLICY_FILE=str(home_b / "policy.json"))
        node_a = Runtime(load_settings(env_a))
        upgrade(node_a.settings.database_url)
        now = utcnow()
        rows = [{"id": str(uuid.uuid4()), "origin": "bench-a", "type": "run.succeeded", "run_id": str(uuid.uuid4()),
                 "created_at": now, "data": {"mode": "simulated", "n": i}} for i in range(count)]
        with node_a.db.write() as session:
            session.connection().execute(Event.__table__.insert(), rows)
        started, cpu = time.perf_counter(), time.process_time()
        with node_a.db.read() as session:
            local = [events.as_dict(e) for e in session.scalars(select(Event).order_by(Event.seq))]
        local_s, local_cpu_s = time.perf_counter() - started, time.process_time() - cpu
        assert len(local) == count
        with Procs(env_a, home_a) as procs:
            token = procs.run("federation", "token", "create", "bench-b").strip()
            port = free_port()
            server = procs.aurora("serve", "--port", str(port), "--workers", "2")
            wait_http(f"http://127.0.0.1:{port}")
            node_b = Runtime(load_settings(env_b))
            upgrade(node_b.settings.database_url)
            set_runtime(node_b)
            registry.register(node_b.db, f"http://127.0.0.1:{port}", "bench-a", token,
                              public_key=node_a.identity.public_key,
                              secret_path=node_b.settings.federation_secret_path)
            started, cpu, server_cpu = time.perf_counter(), time.process_time(), _group_cpu_s(server.pid)
            [result] = Syncer(node_b).run("bench-a")
            sync_s = time.perf_counter() - started
            # The pull is a chain (ask, serve, verify, store, ask again): its CPU seconds, puller
            # and server together, say what an idle machine would reach, whatever the load here.
            cpu_s = time.process_time() - cpu + _group_cpu_s(server.pid) - server_cpu
        assert result.get("pulled") == count, result
        assert not result.get("rejected"), result
        return {"events": count, "replicated_per_s": round(count / sync_s), "sync_s": round(sync_s, 1),
                "local_read_s": round(local_s, 2), "crypto_us_per_event": _crypto_us(local[:2000]),
                "cpu_s": round(cpu_s, 1), "per_cpu_s": round(count / cpu_s), "local_read_cpu_s": round(local_cpu_s, 2),
                "signed": True, "goal": ">= 5000 events/s"}
    finally:
        cleanup(home_a)
        cleanup(home_b)

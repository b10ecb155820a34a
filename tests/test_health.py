"""Health that tells a load balancer the truth: liveness, readiness (database writable, broker
writable, disk with room, a worker alive) and the full report, without echoing configuration."""

from __future__ import annotations

import contextlib
import time

from conftest import free_port
from test_unavailable import fill, tiny_disk

from aurora.config import load_settings
from aurora.db import forget
from aurora.migrations import upgrade
from aurora.runtime import Runtime, set_runtime


def test_ready_is_503_without_a_worker_and_200_with_one(make_stack) -> None:
    stack = make_stack()
    stack.port = free_port()
    stack.aurora("db", "upgrade")
    stack.start("web", "serve", "--port", str(stack.port), "--workers", "1")
    stack.wait_healthy(workers=False)
    assert stack.http("GET", "/health/live", key="").status_code == 200
    not_ready = stack.http("GET", "/health/ready", key="")
    assert not_ready.status_code == 503 and not_ready.json()["failing"] == ["workers"]
    assert int(not_ready.headers["Retry-After"]) > 0
    assert not_ready.json()["components"]["database"]["writable"] is True
    # The full report stays 200 without a worker: degraded, since requests are still stored.
    full = stack.http("GET", "/health", key="")
    assert full.status_code == 200 and full.json()["status"] == "degraded"
    stack.start("worker", "worker", "-c", "1")
    deadline, ready = time.monotonic() + 40, not_ready
    while ready.status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
        ready = stack.http("GET", "/health/ready", key="")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready" and ready.json()["components"]["workers"]["seen"] == 1
    # The write test never leaves a file where a worker would read it as a message.
    broker = stack.cwd / "var" / "broker"
    assert not [p for p in broker.rglob("*") if p.name.startswith(".health-")]


def test_a_full_disk_fails_disk_broker_and_database_without_naming_paths(env) -> None:
    from aurora.web import create_app

    with tiny_disk() as disk:
        url = f"sqlite:///{disk / 'aurora.db'}"
        home = disk / "var"
        try:
            runtime = Runtime(load_settings({**env, "AURORA_HOME": str(home), "AURORA_DATABASE_URL": url,
                                             "AURORA_MIN_FREE_DISK_MB": "0"}))
            upgrade(url)
            set_runtime(runtime)
            client = create_app({"TESTING": True}).test_client()
            before = client.get("/health").json["components"]
            assert before["disk"]["ok"] and before["broker"]["ok"] and before["database"]["writable"]
            import sqlite3

            with contextlib.closing(sqlite3.connect(disk / "aurora.db")) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            fill(disk)
            response = client.get("/health")
            assert response.status_code == 503 and response.json["status"] == "down"
            components = response.json["components"]
            assert components["broker"]["ok"] is False and "disk is full" in components["broker"]["error"]
            assert components["database"]["ok"] is False and "disk is full" in components["database"]["error"]
            assert str(disk) not in response.get_data(as_text=True)
            ready = client.get("/health/ready")
            assert ready.status_code == 503
            assert {"database", "broker", "workers"} <= set(ready.json["failing"])
            assert client.get("/health/live").status_code == 200
        finally:
            set_runtime(None)
            forget(url)


def test_too_little_free_space_is_not_ok(client, runtime) -> None:
    from dataclasses import replace

    runtime.settings = replace(runtime.settings, min_free_disk_mb=10**9)  # a petabyte: never there
    response = client.get("/health")
    assert response.status_code == 503
    disk = response.json["components"]["disk"]
    assert disk["ok"] is False and "less than" in disk["error"] and runtime.settings.home.as_posix() not in disk["error"]
    assert "disk" in client.get("/health/ready").json["failing"]


def test_health_never_echoes_a_broker_url_or_its_password(client, runtime) -> None:
    from dataclasses import replace

    runtime.settings = replace(runtime.settings, broker_url=f"redis://:s3cr3t-pw@127.0.0.1:{free_port()}/0")
    for path in ("/health", "/health/ready"):
        response = client.get(path)
        assert response.status_code == 503
        text = response.get_data(as_text=True)
        assert "s3cr3t-pw" not in text and "127.0.0.1" not in text and str(runtime.settings.home) not in text


def test_health_tells_each_adapters_real_mode_and_never_echoes_the_policy(client, runtime, env) -> None:
    """dry_run: true was reported while adapters.mailgun.dry_run: false sent live mail."""
    import json
    from pathlib import Path

    policy_file = Path(env["AURORA_POLICY_FILE"])
    secrets = Path(env["AURORA_SECRETS_FILE"])
    secrets.write_text(json.dumps({"mailgun": {"api_key": "key-healthSECRET", "domain": "mg.example.com"}}))
    secrets.chmod(0o600)
    before = client.get("/health").json["components"]["policy"]
    assert before["dry_run"] is True and set(before["adapters"].values()) == {"simulated"}
    policy = json.loads(policy_file.read_text())
    policy["adapters"].setdefault("mailgun", {})["dry_run"] = False
    policy_file.write_text(json.dumps(policy))
    runtime.policies._check()
    now = client.get("/health").json["components"]["policy"]
    assert policy["dry_run"] is True and now["dry_run"] is False
    assert now["adapters"]["mailgun"] == "canary 10%" and now["adapters"]["stripe"] == "simulated"
    policy["security"]["canary_percent"] = "secret-looking-value"  # a type error
    policy_file.write_text(json.dumps(policy))
    runtime.policies._check()
    body = client.get("/health").get_data(as_text=True)
    assert "secret-looking-value" not in body and "key-healthSECRET" not in body
    component = json.loads(body)["components"]["policy"]
    assert component["error"].startswith("policy invalid") and "aurora doctor" in component["error"]
    assert component["runs_blocked"] is True  # fail closed: no run acts on the last good policy


def test_health_says_live_once_promoted_and_rolled_back_after_a_rollback(client, runtime, env) -> None:
    import json
    from pathlib import Path

    from aurora import adapter_state

    secrets = Path(env["AURORA_SECRETS_FILE"])
    secrets.write_text(json.dumps({"mailgun": {"api_key": "key-healthSECRET", "domain": "mg.example.com"}}))
    secrets.chmod(0o600)
    policy_file = Path(env["AURORA_POLICY_FILE"])
    policy = json.loads(policy_file.read_text())
    policy["adapters"].setdefault("mailgun", {})["dry_run"] = False
    policy_file.write_text(json.dumps(policy))
    runtime.policies._check()

    def mode() -> str:
        return client.get("/health").json["components"]["policy"]["adapters"]["mailgun"]

    assert mode() == "canary 10%"
    adapter_state.promote(runtime.db, "mailgun", "test-node")
    assert mode() == "live"
    with runtime.db.write() as session:
        adapter_state.roll_back(runtime.db, session, "mailgun", "test-node", "three failures", None)
    assert mode() == "rolled back"
    assert client.get("/health").json["components"]["policy"]["dry_run"] is True  # nothing may act live

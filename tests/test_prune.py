"""``aurora prune --before DATE``: settled runs' document, steps and events go to a gzip archive;
the audit chain still verifies, federation cursors still page, /metrics still counts them, and
``aurora status`` says where a pruned run went."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import free_port
from sqlalchemy import func, select

from aurora import documents, keys
from aurora.config import load_settings
from aurora.federation import tokens
from aurora.migrations import upgrade
from aurora.models import Event, Role, Run, RunStep, utcnow
from aurora.runtime import Runtime, set_runtime

MAIL = "name: send_report\ngoal: send_email\npayload: {to: kunde@example.com, subject: Hi, template: monthly}\n"


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aurora", *args], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(params=["sqlite", "postgresql"])
def prune_env(request, env) -> dict[str, str]:
    policy = json.loads(Path(env["AURORA_POLICY_FILE"]).read_text())
    policy.update(federation_enabled=True, federation_nodes=["peer"])
    Path(env["AURORA_POLICY_FILE"]).write_text(json.dumps(policy))
    if request.param == "postgresql":
        env = {**env, "AURORA_DATABASE_URL": request.getfixturevalue("postgres_url")}
    upgrade(env["AURORA_DATABASE_URL"])
    return env


def counts(runtime: Runtime, run_id: str) -> tuple[int, int]:
    with runtime.db.read() as session:
        return (session.scalar(select(func.count()).select_from(RunStep).where(RunStep.run_pk == select(Run.pk).where(Run.id == run_id).scalar_subquery())),
                session.scalar(select(func.count()).select_from(Event).where(Event.run_id == run_id)))


def test_prune_archives_old_runs_and_keeps_audit_federation_metrics_and_status(prune_env, tmp_path) -> None:
    runtime = Runtime(load_settings(prune_env))
    set_runtime(runtime)
    try:
        from aurora.web import create_app

        engine = runtime.engine
        workflow = documents.load(MAIL)
        old = [engine.submit(workflow, "sam").id for _ in range(3)]
        for run_id in old:
            assert engine.execute(run_id).status == "succeeded"
        waiting = engine.submit(workflow, "sam").id  # queued: not settled, never pruned
        time.sleep(0.05)
        cutoff = utcnow()
        time.sleep(0.05)
        new = engine.submit(workflow, "sam").id
        assert engine.execute(new).status == "succeeded"
        client = create_app({"TESTING": True}).test_client()
        viewer = {"Authorization": f"Bearer {keys.create(runtime.db, 'vic', Role.VIEWER)}"}
        peer = {"Authorization": f"Bearer {tokens.create(runtime.db, 'peer')}"}
        before = client.get("/federation/events?since=0&limit=1000", headers=peer).json["events"]
        first_old_seq = min(e["seq"] for e in before if e["run_id"] == old[0])

        done = cli(prune_env, "prune", "--before", cutoff.isoformat())
        assert done.returncode == 0, done.stderr
        assert "pruned 3 run(s) (9 steps, 9 events)" in done.stdout, done.stdout
        archive = Path(done.stdout.rsplit(" into ", 1)[1].strip())
        assert archive.parent == Path(prune_env["AURORA_HOME"]).absolute() / "archive"
        with gzip.open(archive, "rt") as lines:
            items = [json.loads(line) for line in lines]
        assert sorted(i["run"]["id"] for i in items) == sorted(old)
        for item in items:  # everything that left the database is in the archive
            assert item["run"]["document"]["payload"]["to"] == "kunde@example.com"
            assert [s["step"] for s in item["steps"]] == ["route", "gate", "act"]
            assert [e["type"] for e in item["events"]] == ["run.queued", "run.running", "run.succeeded"]
        for run_id in old:
            assert counts(runtime, run_id) == (0, 0)
        assert counts(runtime, new) == (3, 3) and counts(runtime, waiting) == (0, 1)
        with runtime.db.read() as session:
            assert session.scalar(select(Run.status).where(Run.id == old[0])) == "succeeded"

        verify = cli(prune_env, "audit", "verify")
        assert verify.returncode == 0 and verify.stdout.startswith("audit chain intact ("), verify.stdout

        # a peer's cursor from before the prune still pages on, past the removed numbers
        page = client.get(f"/federation/events?since={first_old_seq - 1}&limit=2", headers=peer).json
        assert [e["run_id"] for e in page["events"]] and old[0] not in {e["run_id"] for e in page["events"]}
        assert all(e["seq"] > first_old_seq for e in page["events"]) and page["has_more"]
        rest = client.get(f"/federation/events?since={page['last_seq']}&limit=1000", headers=peer).json
        survivors = {e["seq"] for e in before if e["run_id"] not in old}
        assert {e["seq"] for e in page["events"] + rest["events"]} == {s for s in survivors if s >= first_old_seq}

        metrics = client.get("/metrics", headers=viewer).get_data(as_text=True)
        assert 'aurora_runs{goal="send_email",status="succeeded"} 4.0' in metrics
        assert 'aurora_runs{goal="send_email",status="queued"} 1.0' in metrics
        assert 'aurora_adapter_calls_total{adapter="mailgun",mode="simulated",outcome="ok"} 4.0' in metrics

        shown = client.get(f"/workflows/{old[0]}", headers=viewer).json
        assert shown["status"] == "succeeded" and shown["archive"] == str(archive)
        assert shown["steps"] == [] and shown["timeline"] == []

        again = cli(prune_env, "prune", "--before", cutoff.isoformat())
        assert again.returncode == 0 and again.stdout.startswith("nothing to prune"), again.stdout
        assert cli(prune_env, "prune", "--before", "last tuesday").returncode == 2

        port = free_port()  # `aurora status` through a real server
        key = keys.create(runtime.db, "vera", Role.VIEWER)
        server = subprocess.Popen([sys.executable, "-m", "aurora", "serve", "--port", str(port), "--workers", "1"],
                                  env={**os.environ, **prune_env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
                    break
                except requests.RequestException:
                    time.sleep(0.2)
            status = cli({**prune_env, "AURORA_URL": f"http://127.0.0.1:{port}", "AURORA_TOKEN": key,
                          "AURORA_CLI_CONFIG": str(tmp_path / "cli.json")}, "status", old[0])
            assert status.returncode == 0, status.stderr
            assert f"archived in {archive}" in status.stderr
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        set_runtime(None)


def test_prune_in_small_batches_takes_every_old_settled_run_and_nothing_else(prune_env) -> None:
    """Runs are taken a window of consecutive pks at a time: a window with nothing to take (three
    runs still queued in a row), old settled runs on both sides of it, and a run settled after the
    cutoff are each handled."""
    from aurora.prune import prune

    runtime = Runtime(load_settings(prune_env))
    set_runtime(runtime)
    try:
        engine = runtime.engine
        workflow = documents.load(MAIL)
        old, queued = [], []
        for i in range(7):
            run_id = engine.submit(workflow, "sam").id
            if i in (2, 3, 4):
                queued.append(run_id)
            else:
                assert engine.execute(run_id).status == "succeeded"
                old.append(run_id)
        time.sleep(0.05)
        cutoff = utcnow()
        time.sleep(0.05)
        new = engine.submit(workflow, "sam").id
        assert engine.execute(new).status == "succeeded"

        done = prune(runtime.db, Path(prune_env["AURORA_HOME"]), cutoff, runtime.settings.node_name, batch=2)
        assert (done["runs"], done["steps"], done["events"]) == (4, 12, 12), done
        with runtime.db.read() as session:
            assert set(session.scalars(select(Run.id).where(Run.archive.is_not(None)))) == set(old)
        for run_id in queued:
            assert counts(runtime, run_id) == (0, 1)
        assert counts(runtime, new) == (3, 3)
    finally:
        set_runtime(None)

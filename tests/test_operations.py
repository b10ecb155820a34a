"""Operations: aurora doctor, the audit chain from the CLI, /metrics, JSON logs with run ids and
without tokens, and /health per component."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import requests
from conftest import ROOT, free_port

MAIL = (ROOT / "workflows" / "send_report.yaml").read_bytes()


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aurora", *args], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=60)


def test_doctor_findings_and_exit_status(env, runtime) -> None:
    done = cli(env, "doctor")
    assert done.returncode == 1 and "secrets file" in done.stdout and "does not exist" in done.stdout
    secrets = Path(env["AURORA_SECRETS_FILE"])
    secrets.write_text(json.dumps({"stripe": {"secret_key": "sk_test_realREAL123"}}))
    secrets.chmod(0o644)
    bad = cli(env, "doctor")
    assert bad.returncode == 2 and "chmod 600" in bad.stdout
    secrets.chmod(0o600)
    policy = json.loads(Path(env["AURORA_POLICY_FILE"]).read_text())
    policy.update(dry_run=False, allow_payments=True)
    policy["security"].update(require_quorum_for_critical=1, canary_percent=100)
    policy["adapters"]["stripe"].pop("rate_limit")
    Path(env["AURORA_POLICY_FILE"]).write_text(json.dumps(policy))
    findings = json.loads(cli(env, "doctor", "--json").stdout)
    failing = {f["check"]: f for f in findings if f["level"] != "ok"}
    assert failing["quorum"]["level"] == "error"
    assert failing["stripe webhook secret"]["level"] == "error"
    assert failing["stripe canary"]["level"] == "warn" and failing["stripe rate limit"]["level"] == "warn"
    assert all(f["fix"] for f in failing.values())
    assert "sk_test_realREAL123" not in json.dumps(findings)


def test_doctor_names_a_policy_file_others_may_write(env, runtime) -> None:
    policy = Path(env["AURORA_POLICY_FILE"])
    policy.chmod(0o664)
    status, found = _doctor(env)
    assert status == 2 and found["policy"]["level"] == "error"
    assert "writable by group or others" in found["policy"]["message"]
    assert found["policy"]["fix"] == f"chmod go-w {policy}"
    policy.chmod(0o644)
    assert _doctor(env)[1]["policy"]["level"] == "ok"


def test_audit_verify_detects_edits_and_deletions_and_exports(env, runtime) -> None:
    from sqlalchemy import delete, select

    from aurora import documents
    from aurora.models import AuditRecord

    for _ in range(4):
        runtime.engine.execute(runtime.engine.submit(documents.load(MAIL), "sam").id)
    assert cli(env, "audit", "verify").stdout.startswith("audit chain intact (4 records)")
    exported = [json.loads(line) for line in cli(env, "audit", "export", "--since", "2020-01-01").stdout.splitlines()]
    assert len(exported) == 4 and exported[1]["prev_hash"] == exported[0]["hash"]
    assert cli(env, "audit", "export", "--since", "2999-01-01").stdout == ""
    assert cli(env, "audit", "export", "--since", "yesterday").returncode == 2
    with runtime.db.write() as session:
        second = session.scalars(select(AuditRecord).order_by(AuditRecord.pk)).all()[1]
        session.execute(delete(AuditRecord).where(AuditRecord.pk == second.pk))
    broken = cli(env, "audit", "verify")
    assert broken.returncode == 1 and f"record {second.pk + 1}" in broken.stderr


def test_metrics_logs_and_health_in_a_running_stack(make_stack) -> None:
    stack = make_stack(AURORA_LOG_FORMAT="json")
    ports = [free_port(), free_port()]
    stack.port = ports[0]
    stack.start("up", "up", "--port", str(ports[0]), "--port", str(ports[1]))
    import re
    import time

    deadline = time.monotonic() + 60
    while "AURORA_TOKEN=" not in stack.log("up") and time.monotonic() < deadline:
        time.sleep(0.2)
    stack.keys["admin"] = re.search(r"AURORA_TOKEN=(aur_\S+)", stack.log("up")).group(1)
    stack.wait_healthy()
    run_id = stack.http("POST", "/workflows", data=MAIL, headers={"Content-Type": "application/yaml"}).json()["id"]
    stack.wait_status(run_id, {"succeeded"})
    requests.get(f"{stack.url}/federation/events?token=aurfed_SECRETQUERYTOKEN", timeout=5)

    assert requests.get(stack.url + "/metrics", timeout=5).status_code == 401
    deadline = time.monotonic() + 10
    text = stack.http("GET", "/metrics").text
    while "aurora_run_duration_seconds_count" not in text and time.monotonic() < deadline:
        time.sleep(0.2)  # the worker counts the run just after it has stored its status
        text = stack.http("GET", "/metrics").text
    assert 'aurora_runs{goal="send_email",status="succeeded"} 1.0' in text
    assert 'aurora_adapter_calls_total{adapter="mailgun",mode="simulated",outcome="ok"} 1.0' in text
    assert ('aurora_run_duration_seconds_count{goal="send_email",mode="simulated",status="succeeded"} 1.0'
            in text)  # from the worker
    assert "aurora_http_requests_total" in text and "aurora_queue_depth 0.0" in text

    time.sleep(0.5)
    lines = [json.loads(line) for line in stack.up_logs().splitlines() if line.startswith("{")]
    run_lines = [line for line in lines if line.get("run_id") == run_id]
    assert {line.get("step") for line in run_lines} >= {"act", "finish"}
    requests_logged = [line for line in lines if line.get("logger") == "aurora.request"]
    assert any(line["path"] == "/workflows" and line["status"] == 201 for line in requests_logged)
    blob = stack.log("up") + stack.up_logs()
    assert "aurfed_SECRETQUERYTOKEN" not in blob
    assert blob.count(stack.keys["admin"]) == 2  # only in the first-start banner: the key line and the export line

    health = stack.http("GET", "/health", key="").json()
    assert set(health["components"]) >= {"database", "broker", "workers", "beats", "policy", "federation"}


def test_health_is_503_when_the_broker_is_unreachable(client, runtime) -> None:
    from dataclasses import replace

    runtime.settings = replace(runtime.settings, broker_url=f"redis://127.0.0.1:{free_port()}/0")
    response = client.get("/health")
    assert response.status_code == 503 and response.json["status"] == "down" and response.headers["Retry-After"]
    assert response.json["components"]["broker"]["ok"] is False


def test_deploy_files_are_hardened_and_start_the_real_commands(env) -> None:
    import configparser

    for name, command in (("aurora-web", "gunicorn --config"), ("aurora-worker", "aurora worker"),
                          ("aurora-system-worker", "aurora worker --system"), ("aurora-beat", "aurora beat")):
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.optionxform = str
        unit.read(ROOT / "deploy" / f"{name}.service")
        service = unit["Service"]
        assert command in service["ExecStart"]
        for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("PrivateTmp", "yes"),
                           ("User", "aurora"), ("Restart", "always"), ("KillMode", "mixed")):
            assert service[key] == value, (name, key)
        assert service["EnvironmentFile"] == "/etc/aurora/aurora.env"
    check = subprocess.run([sys.executable, "-m", "gunicorn", "--check-config", "--config",
                            str(ROOT / "deploy" / "gunicorn.conf.py"), "aurora.web.asgi:app"],
                           env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    procfile = (ROOT / "Procfile").read_text()
    assert "web: gunicorn" in procfile and "worker: aurora worker" in procfile and "beat: aurora beat" in procfile
    assert "system: aurora worker --system" in procfile


def test_metrics_are_made_once_when_many_threads_start_together(tmp_path) -> None:
    # A fresh process, so the metric objects do not exist yet; 16 threads race to make them.
    code = """
import os, threading, sys
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
from aurora import metrics
errors = []
barrier = threading.Barrier(16)
def hit():
    barrier.wait()
    try:
        metrics.request_done("POST", "/route", 200, 0.001)
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=hit) for _ in range(16)]
[t.start() for t in threads]
[t.join() for t in threads]
print(errors)
"""
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_a_refused_policy_edit_degrades_health_but_keeps_it_up(client, runtime, env) -> None:
    Path(env["AURORA_POLICY_FILE"]).write_text('{"dry_run": "maybe"}')
    runtime.policies._mtime, runtime.policies._checked_at = None, 0  # noqa: SLF001
    response = client.get("/health")
    assert response.status_code == 200 and response.json["status"] == "degraded"
    # named, never quoted: /health has no key, and the refusal quotes the policy's values
    component = response.json["components"]["policy"]
    assert component["error"].startswith("policy invalid") and "see `aurora doctor`" in component["error"]
    assert component["runs_blocked"] is True  # fail closed: no run acts on the last good policy
    assert "maybe" not in response.get_data(as_text=True)


def _doctor(env: dict[str, str], **extra: str) -> tuple[int, dict[str, dict]]:
    base = {k: v for k, v in os.environ.items() if k != "AURORA_URL"}
    done = subprocess.run([sys.executable, "-m", "aurora", "doctor", "--json"], env={**base, **env, **extra},
                          capture_output=True, text=True, timeout=60)
    return done.returncode, {f["check"]: f for f in json.loads(done.stdout)}


def test_doctor_covers_every_checklist_item(env, runtime) -> None:
    """Dry run first, webhook secrets of every provider that calls back (Mailgun was missed), 2FA
    explained, monitoring tried: each has its finding, with the exit status for cron and CI."""
    import http.server
    import threading

    from aurora import documents
    from aurora.doctor import Finding, exit_status

    runtime.engine.execute(runtime.engine.submit(documents.load(MAIL), "sam").id)  # a dry run of the mail
    secrets = Path(env["AURORA_SECRETS_FILE"])
    secrets.write_text(json.dumps({
        "stripe": {"secret_key": "sk_test_realREAL123", "webhook_secret": "whsec_realREAL"},
        "mailgun": {"api_key": "key-realREAL456", "domain": "mg.example.com", "from": "a@example.com"}}))
    secrets.chmod(0o600)
    policy = json.loads(Path(env["AURORA_POLICY_FILE"]).read_text())
    policy.update(dry_run=False, allow_payments=True)
    policy["security"]["canary_percent"] = 100
    for name in ("stripe", "mailgun"):
        policy["adapters"][name].update(dry_run=False, rate_limit="5/second")
    Path(env["AURORA_POLICY_FILE"]).write_text(json.dumps(policy))

    status, found = _doctor(env)
    assert status == 2
    assert found["mailgun webhook secret"]["level"] == "error" and "webhook_signing_key" in found["mailgun webhook secret"]["message"]
    assert found["stripe dry run"]["level"] == "warn" and "mailgun dry run" not in found  # the mail was simulated first
    assert found["rate limit"]["level"] == "ok"
    assert found["2FA"]["level"] == "info" and "dashboard.stripe.com" in found["2FA"]["fix"]
    assert found["monitoring"]["level"] == "info" and "/health/ready" in found["monitoring"]["fix"]

    _, found = _doctor(env, AURORA_URL=f"http://127.0.0.1:{free_port()}")
    assert found["monitoring"]["level"] == "error" and "not reachable" in found["monitoring"]["message"]

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _, found = _doctor(env, AURORA_URL=f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    assert found["monitoring"]["level"] == "ok"
    assert "webhook_signing_key" not in json.dumps(found.get("webhook secret", {}))
    # info never changes the status: cron and CI see 0 for all good
    assert exit_status([Finding("ok", "a", ""), Finding("info", "2FA", "")]) == 0
    assert exit_status([Finding("info", "2FA", ""), Finding("warn", "b", "")]) == 1

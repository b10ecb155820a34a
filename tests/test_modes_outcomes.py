"""Outcomes that never pretend: every run says LIVE or SIMULATED at the top level; a critical run
the policy means live that would only be simulated ends not_acted; a run blocked by an unusable
secrets file says so and proceeds once it is fixed; `aurora submit --wait` exits by outcome."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import free_port
from sqlalchemy import select
from test_adapters_live import CHARGE, SECRETS, live  # noqa: F401 - the fixture
from werkzeug.serving import make_server

from aurora import adapter_state, documents
from aurora.cli import main
from aurora.models import AuditRecord, Event, Run

MAIL = {"to": "kunde@example.com", "subject": "Monatsbericht", "text": "Hallo"}


def _events(runtime: Any, run_id: str, kind: str) -> list[Event]:
    with runtime.db.read() as session:
        return list(session.scalars(select(Event).where(Event.run_id == run_id, Event.type == kind)))


# -- a critical run that would only be simulated ------------------------------------------------

def test_a_canary_simulated_approved_charge_does_not_end_succeeded(live, client, api_keys) -> None:  # noqa: F811
    live.set_policy(security__canary_percent=0)  # live policy, but no run is inside the canary share
    run = live.run("charge", {**CHARGE, "payment_method": "pm_1"})
    assert run.status == "not_acted"
    assert run.error["type"] == "would_be_simulated" and run.error["mode"] is None
    assert "canary" in run.error["mode_reason"] and "aurora adapters promote stripe" in run.error["what_to_do"]
    assert live.servers["stripe"].received == [] and live.audit(run.id) == []  # nothing was sent
    body = client.get(f"/workflows/{run.id}", headers=api_keys.header("viewer")).get_json()
    assert body["status"] == "not_acted" and body["mode"] is None and "canary" in body["mode_reason"]
    assert [e["type"] for e in body["timeline"]][-1] == "run.not_acted"
    # Once promoted, the same workflow submitted again acts live.
    adapter_state.promote(live.runtime.db, "stripe", "test-node")
    again = live.run("charge", {**CHARGE, "payment_method": "pm_1"})
    assert again.status == "succeeded" and again.result["mode"] == "live"


def test_a_charge_that_a_rollback_would_simulate_is_not_acted(live) -> None:  # noqa: F811
    live.servers["stripe"].state.secret_key = "sk_test_rotated"
    assert live.run("charge", {**CHARGE, "payment_method": "pm_1"}).status == "failed"  # rolls stripe back
    after = live.run("charge", {**CHARGE, "payment_method": "pm_1"})
    assert after.status == "not_acted" and "rolled back" in after.error["mode_reason"]
    assert "aurora adapters enable stripe" in after.error["what_to_do"]


def test_a_dry_run_charge_still_succeeds_simulated_and_says_so(live, client, api_keys) -> None:  # noqa: F811
    live.set_policy(dry_run=True)  # the policy itself asks for a simulation: nothing pretends
    run = live.run("charge", {**CHARGE, "payment_method": "pm_1"})
    assert run.status == "succeeded" and run.result["mode"] == "simulated"
    listed = client.get("/workflows", headers=api_keys.header("viewer")).get_json()["runs"][0]
    assert listed["mode"] == "simulated" and listed["mode_reason"] == "policy: dry_run is true"
    assert listed["blocked"] is None


def test_live_and_failed_runs_carry_their_mode_at_the_top_level(live, client, api_keys) -> None:  # noqa: F811
    sent = live.run("send_email", MAIL)
    live.servers["mailgun"].state.api_key = "key-rotated"
    failed = live.run("send_email", MAIL)
    bodies = [client.get(f"/workflows/{r.id}", headers=api_keys.header("viewer")).get_json() for r in (sent, failed)]
    assert [(b["status"], b["mode"]) for b in bodies] == [("succeeded", "live"), ("failed", "live")]
    assert "canary" not in bodies[0]["mode_reason"] and bodies[1]["mode_reason"]


def test_the_page_shows_live_and_simulated_badges(live, client, api_keys) -> None:  # noqa: F811
    sent = live.run("send_email", MAIL)
    live.set_policy(dry_run=True)
    simulated = live.run("send_email", MAIL)
    token = client.get("/ui/login").get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
    assert client.post("/ui/login", data={"key": api_keys.viewer, "csrf_token": token}).status_code in (302, 303)
    page = client.get("/ui/").get_data(as_text=True)
    assert 'class="badge mode live"' in page and 'class="badge mode simulated"' in page
    one = client.get(f"/ui/runs/{simulated.id}").get_data(as_text=True)
    assert ">SIMULATED<" in one and "policy: dry_run is true" in one
    assert ">LIVE<" in client.get(f"/ui/runs/{sent.id}").get_data(as_text=True)


def test_the_page_says_live_unmistakably_and_writes_stripes_cents_as_money(live, client, api_keys) -> None:  # noqa: F811
    waiting = live.run("charge", {**CHARGE, "payment_method": "pm_1"}, approve=False)
    done = live.run("charge", {**CHARGE, "payment_method": "pm_1"})
    assert done.status == "succeeded" and done.result["response"]["amount"] == 15000  # Stripe's cents
    german = {"Accept-Language": "de-DE,de;q=0.9"}
    token = client.get("/ui/login").get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
    client.post("/ui/login", data={"key": api_keys.approver, "csrf_token": token})
    page = client.get(f"/ui/runs/{waiting.id}", headers=german).get_data(as_text=True).replace("\u00a0", " ")
    assert 'class="mode-box live"' in page and ">ECHT<" in page and "Das passiert wirklich" in page
    assert "Stripe bucht 150,00 € beim Kunden cus_42 ab." in page
    page = client.get(f"/ui/runs/{done.id}", headers=german).get_data(as_text=True).replace("\u00a0", " ")
    assert "Stripe hat 150,00 € beim Kunden cus_42 abgebucht." in page and "Das ist wirklich geschehen." in page
    english = client.get(f"/ui/runs/{done.id}", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "Stripe charged €150.00 to customer cus_42." in english


# -- blocked by the secrets file ---------------------------------------------------------------

def test_an_unsafe_secrets_file_blocks_the_run_visibly_until_fixed(live, env, client, api_keys) -> None:  # noqa: F811
    secrets = Path(env["AURORA_SECRETS_FILE"])
    secrets.chmod(0o644)
    engine = live.runtime.engine
    run = engine.submit(documents.load(json.dumps({"name": "m", "goal": "send_email", "payload": MAIL}), fmt="json"),
                        "sam")
    engine.execute(run.id)
    engine.execute(run.id)  # the sweeper's retry: still blocked, and said once
    [blocked] = _events(live.runtime, run.id, "run.blocked")
    assert blocked.data["component"] == "secrets" and "chmod 600" in blocked.data["message"]
    body = client.get(f"/workflows/{run.id}", headers=api_keys.header("viewer")).get_json()
    assert body["status"] == "queued" and body["blocked"]["component"] == "secrets"
    assert "readable by group or others" in body["blocked"]["message"]
    health = client.get("/health")
    assert health.status_code == 200
    assert health.get_json()["status"] == "degraded"
    component = health.get_json()["components"]["secrets"]
    assert component["ok"] is False and "mode 644" in component["error"] and component["blocked_runs"] == 1
    assert str(secrets) not in health.get_data(as_text=True)  # /health asks for no key: no paths
    assert live.servers["mailgun"].received == []

    secrets.chmod(0o600)  # fixed: the next try proceeds under the policy in force now
    live.set_policy(dry_run=True)
    engine.execute(run.id)
    done = client.get(f"/workflows/{run.id}", headers=api_keys.header("viewer")).get_json()
    assert done["status"] == "succeeded" and done["mode"] == "simulated" and done["blocked"] is None
    assert done["error"] is None and client.get("/health").get_json()["components"]["secrets"] == {"ok": True}


def test_an_unreadable_secrets_file_blocks_the_run_and_says_so(live, env, client) -> None:  # noqa: F811
    secrets = Path(env["AURORA_SECRETS_FILE"])
    secrets.unlink()
    secrets.mkdir(mode=0o700)  # there, private, and not a file anyone can read secrets from
    engine = live.runtime.engine
    run = engine.submit(documents.load(json.dumps({"name": "m", "goal": "send_email", "payload": MAIL}), fmt="json"),
                        "sam")
    assert engine.execute(run.id).status == "queued"
    [blocked] = _events(live.runtime, run.id, "run.blocked")
    assert blocked.data["component"] == "secrets" and "cannot read secrets" in blocked.data["message"]
    assert client.get("/health").get_json()["components"]["secrets"]["ok"] is False


def test_a_worker_without_a_loadable_policy_blocks_runs_until_it_is_fixed(runtime, env) -> None:
    from aurora.config import load_settings
    from aurora.runtime import Runtime

    policy = Path(env["AURORA_POLICY_FILE"])
    good = policy.read_text()
    runtime.policies.current()  # the web's, loaded before the edit: it keeps its last good policy
    policy.write_text("{not json")
    worker = Runtime(load_settings(env))  # a process started with the broken file: no last good policy
    engine = worker.engine
    # submitted where the policy loaded (the web's; submit checks the charge ceiling against it)
    run = runtime.engine.submit(documents.load(json.dumps({"name": "m", "goal": "send_email", "payload": MAIL}),
                                               fmt="json"), "sam")
    assert engine.execute(run.id).status == "queued"
    [blocked] = _events(worker, run.id, "run.blocked")
    assert blocked.data["component"] == "policy" and "not valid JSON" in blocked.data["message"]
    policy.write_text(good)  # fixed: the next try reads it and proceeds
    assert engine.execute(run.id).status == "succeeded"


# -- aurora submit --wait exit codes -----------------------------------------------------------

@pytest.fixture
def served(app: Any, runtime: Any) -> Iterator[int]:
    """The app on a real port, and a worker thread that executes whatever is queued."""
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            with runtime.db.read() as session:
                queued = session.scalars(select(Run.id).where(Run.status == "queued")).all()
            for run_id in queued:
                runtime.engine.execute(run_id)
            time.sleep(0.05)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    yield port
    stop.set()
    worker.join(5)
    server.shutdown()


def _submit(port: int, token: str, tmp_path: Path, goal: str, payload: dict[str, Any]) -> Any:
    workflow = tmp_path / f"{goal}.json"
    workflow.write_text(json.dumps({"name": goal, "goal": goal, "payload": payload}))
    env = {"AURORA_URL": f"http://127.0.0.1:{port}", "AURORA_TOKEN": token, "AURORA_CLI_CONFIG": str(tmp_path / "c")}
    return CliRunner().invoke(main, ["submit", str(workflow), "--wait", "--timeout", "20", "--json"], env=env)


def test_submit_wait_exit_codes_tell_live_simulated_waiting_and_failure_apart(
        live, served, api_keys, env, tmp_path) -> None:  # noqa: F811
    codes = {}
    codes["live"] = _submit(served, api_keys.submitter, tmp_path, "send_email", MAIL)
    codes["waiting"] = _submit(served, api_keys.submitter, tmp_path, "charge", CHARGE)
    live.servers["mailgun"].state.api_key = "key-rotated"
    codes["failed"] = _submit(served, api_keys.submitter, tmp_path, "send_email", MAIL)
    live.set_policy(dry_run=True)
    codes["simulated"] = _submit(served, api_keys.submitter, tmp_path, "send_email", MAIL)
    Path(env["AURORA_SECRETS_FILE"]).chmod(0o644)
    codes["blocked"] = _submit(served, api_keys.submitter, tmp_path, "send_email", MAIL)
    got = {name: done.exit_code for name, done in codes.items()}
    assert got == {"live": 0, "waiting": 3, "failed": 1, "simulated": 5, "blocked": 7}, {
        k: v.output[-800:] for k, v in codes.items()}
    assert "SUCCEEDED LIVE" in codes["live"].output and "SUCCEEDED SIMULATED" in codes["simulated"].output
    assert json.loads(codes["simulated"].stdout[codes["simulated"].stdout.index("{"):])["mode"] == "simulated"
    assert "BLOCKED" in codes["blocked"].output
    assert SECRETS["mailgun"]["api_key"] not in "".join(done.output for done in codes.values())
    cli_env = {"AURORA_URL": f"http://127.0.0.1:{served}", "AURORA_TOKEN": api_keys.viewer,
               "AURORA_CLI_CONFIG": str(tmp_path / "c")}
    listed = CliRunner().invoke(main, ["list"], env=cli_env).output.splitlines()
    assert listed[0].split() == ["ID", "STATUS", "MODE", "GOAL", "NAME", "CREATED"]
    listed = listed[1:]
    assert [line.split()[1:3] for line in listed] == [
        ["queued", "BLOCKED"], ["succeeded", "SIMULATED"], ["failed", "LIVE"], ["awaiting_approval", "-"],
        ["succeeded", "LIVE"]]
    status = CliRunner().invoke(main, ["status", listed[1].split()[0]], env=cli_env)
    assert status.exit_code == 0 and "SUCCEEDED SIMULATED: policy: dry_run is true" in status.output


@pytest.mark.parametrize("run, code", [
    ({"status": "succeeded", "mode": "live"}, 0), ({"status": "succeeded", "mode": "simulated"}, 5),
    ({"status": "awaiting_approval"}, 3), ({"status": "needs_reconciliation", "mode": "live"}, 4),
    ({"status": "not_acted", "mode": None}, 6), ({"status": "failed"}, 1), ({"status": "rejected"}, 1),
    ({"status": "queued", "blocked": {"component": "secrets"}}, 7),
])
def test_every_outcome_has_its_exit_code(run, code) -> None:
    from aurora.cli._common import exit_code

    assert exit_code(run) == code


def test_audit_records_of_simulated_runs_say_simulated(live) -> None:  # noqa: F811
    live.set_policy(dry_run=True)
    run = live.run("send_email", MAIL)
    [record] = live.audit(run.id)
    assert isinstance(record, AuditRecord) and record.mode == "simulated" and run.result["mode"] == "simulated"


def test_the_sweeper_keeps_retrying_a_blocked_run_and_it_proceeds_once_fixed(live, env) -> None:  # noqa: F811
    from datetime import timedelta

    from sqlalchemy import update

    from aurora.models import utcnow
    from aurora.sweeper import MAX_RESENDS

    secrets = Path(env["AURORA_SECRETS_FILE"])
    secrets.chmod(0o644)
    engine = live.runtime.engine
    run = engine.submit(documents.load(json.dumps({"name": "m", "goal": "send_email", "payload": MAIL}), fmt="json"),
                        "sam")
    for _ in range(MAX_RESENDS + 2):  # a blocked run is no poison run: it is never given up as lost
        assert engine.execute(run.id).status == "queued"
        with engine.db.write() as session:
            session.execute(update(Run).where(Run.id == run.id).values(enqueued_at=utcnow() - timedelta(hours=1)))
        assert engine.sweep(waiting=0) == [run.id]
    assert len(_events(live.runtime, run.id, "run.blocked")) == 1
    secrets.chmod(0o600)
    assert engine.execute(run.id).status == "succeeded"
    assert live.get(run.id).result["mode"] == "live"


# -- fail closed: a refused policy edit, a missing secrets file ---------------------------------

def _reload(harness) -> None:
    harness.runtime.policies._mtime, harness.runtime.policies._checked_at = None, 0  # noqa: SLF001


def _approved(harness, payload: dict[str, Any]) -> str:
    """A run that needed one approval and got it, for what it would send now."""
    from conftest import shown

    from aurora import approvals
    from aurora.keys import Caller
    from aurora.models import Role

    engine = harness.runtime.engine
    run = engine.submit(documents.load(json.dumps({"name": "m", "goal": "send_email", "payload": payload}),
                                       fmt="json"), "sam")
    assert engine.execute(run.id).status == "awaiting_approval"
    voted = approvals.vote(engine, run.id, Caller("alice", Role.APPROVER), "approve", None, "api",
                           shown(engine, run.id))
    assert voted["status"] == "queued"
    return run.id


def test_a_refused_policy_edit_blocks_acting_instead_of_acting_on_the_last_good_policy(
        live, env, client, api_keys) -> None:  # noqa: F811
    engine = live.runtime.engine
    run_id = _approved(live, {**MAIL, "require_approval": True})  # approved as LIVE
    policy = Path(env["AURORA_POLICY_FILE"])
    policy.write_text(policy.read_text().replace('"dry_run": false', '"dry_run": flase', 1))  # a typo
    _reload(live)
    assert engine.execute(run_id).status == "queued"
    fresh = engine.submit(documents.load(json.dumps({"name": "m", "goal": "send_email", "payload": MAIL}),
                                         fmt="json"), "sam")
    assert engine.execute(fresh.id).status == "queued"
    assert live.servers["mailgun"].received == []  # the last good policy was live: nothing went out
    for run_id_ in (run_id, fresh.id):
        [blocked] = _events(live.runtime, run_id_, "run.blocked")
        assert blocked.data["component"] == "policy" and "refused edit" in blocked.data["message"]
        assert "not valid JSON" in blocked.data["message"]
    body = client.get(f"/workflows/{run_id}", headers=api_keys.header("viewer")).get_json()
    assert body["status"] == "queued" and body["blocked"]["component"] == "policy"
    health = client.get("/health").get_json()
    assert health["status"] == "degraded"
    assert health["components"]["policy"]["ok"] is False and health["components"]["policy"]["runs_blocked"] is True

    live.set_policy(dry_run=True)  # fixed, and now a dry run: the run proceeds under this policy
    assert engine.execute(run_id).status == "awaiting_approval"  # the vote was for LIVE: it no longer counts
    assert any(e.data.get("was_mode") == "live" for e in _events(live.runtime, run_id, "approval.voided"))
    assert engine.execute(fresh.id).status == "succeeded" and live.get(fresh.id).result["mode"] == "simulated"
    assert live.servers["mailgun"].received == []
    assert client.get("/health").get_json()["components"]["policy"]["ok"] is True


def test_a_missing_secrets_file_under_a_live_policy_blocks_the_run(live, env, client) -> None:  # noqa: F811
    secrets = Path(env["AURORA_SECRETS_FILE"])
    kept = secrets.read_text()
    secrets.unlink()
    engine = live.runtime.engine
    run = engine.submit(documents.load(json.dumps({"name": "m", "goal": "send_email", "payload": MAIL}), fmt="json"),
                        "sam")
    assert engine.execute(run.id).status == "queued"  # not a quiet "not configured" simulation
    [blocked] = _events(live.runtime, run.id, "run.blocked")
    assert blocked.data["component"] == "secrets" and "secrets file is missing" in blocked.data["message"]
    assert "mailgun" in blocked.data["message"] and live.audit(run.id) == []
    component = client.get("/health").get_json()["components"]["secrets"]
    assert component["ok"] is False and "missing" in component["error"]
    secrets.write_text(kept)
    secrets.chmod(0o600)
    assert engine.execute(run.id).status == "succeeded" and live.get(run.id).result["mode"] == "live"


def test_a_missing_secrets_file_under_a_dry_run_policy_is_no_problem(live, env) -> None:  # noqa: F811
    Path(env["AURORA_SECRETS_FILE"]).unlink()
    live.set_policy(dry_run=True)
    assert live.run("send_email", MAIL).status == "succeeded"

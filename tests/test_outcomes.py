"""A live call's outcome is kept exactly once, in every crash path: a worker killed after Stripe
charged (again and again), a finish transaction that fails after a mail was sent, a finish that
finds its lease taken. Every live call that reached a provider ends with exactly one audit record.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError
from test_adapters_live import CHARGE, SECRETS, Live, live  # noqa: F401 - the fixture
from test_webhooks import post, stripe_header

from aurora import db as aurora_db
from aurora.config import load_settings
from aurora.engine import MAX_ATTEMPTS
from aurora.migrations import upgrade
from aurora.models import Approval, AuditRecord, Event, Run, RunStep, utcnow
from aurora.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent
#: one worker process: execute the run once, print its outcome
WORKER = """
import sys
from aurora.config import load_settings
from aurora.runtime import Runtime
print(Runtime(load_settings()).engine.execute(sys.argv[1]).status)
"""


def audit_records(harness, run_id: str) -> list[AuditRecord]:
    return harness.audit(run_id)


def approve(harness, run_id: str) -> None:
    stored = harness.get(run_id)
    with harness.runtime.db.write() as session:
        for voter in ("alice", "bob"):
            session.add(Approval(run_id=run_id, voter=voter, decision="approve", channel="api",
                                 document_hash=stored.document_hash,
                                 request_hash=stored.approval_binding["hash"]))
        session.execute(update(Run).where(Run.id == run_id).values(status="queued"))


def kill_after_stripe_charged(harness, run_id: str) -> None:
    """A worker process executes the run; the moment its charge reaches Stripe (which makes it and
    stalls its answer) the process is killed with SIGKILL. Then its lease lapses and the sweeper
    sends the run again, as beat would."""
    server = harness.servers["stripe"]
    before = len(server.requests_to("/v1/payment_intents"))
    env = {**os.environ, **harness.env, "AURORA_LEASE_SECONDS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", WORKER, run_id], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while len(server.requests_to("/v1/payment_intents")) == before:
        if proc.poll() is not None or time.monotonic() > deadline:
            out, err = proc.communicate()
            raise AssertionError(f"the worker did not charge: {out} {err[-2000:]}")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while harness.runtime.engine.sweep() != [run_id]:
        assert time.monotonic() < deadline, "the lease of the killed worker did not lapse"
        time.sleep(0.1)


@pytest.fixture
def stalling_stripe(live):  # noqa: F811
    """Stripe makes each PaymentIntent at once but answers only after 20 s while ``on``."""
    server = live.servers["stripe"]
    original, switch = server.default, {"on": True}

    def stall(request):
        reply = original(request)
        if switch["on"] and request.path == "/v1/payment_intents":
            reply.delay = 20
        return reply

    server.default = stall
    return switch


@pytest.mark.parametrize("crashes", [MAX_ATTEMPTS - 1, MAX_ATTEMPTS])
def test_a_charge_whose_worker_is_killed_after_stripe_charged_is_settled_and_recorded_once(
        live, stalling_stripe, client, crashes) -> None:  # noqa: F811
    engine, stripe = live.runtime.engine, live.servers["stripe"]
    run = live.run("charge", {**CHARGE, "customer": "cus_async", "payment_method": "pm_1"}, approve=False)
    assert run.status == "awaiting_approval"  # a gate pass: not an attempt
    approve(live, run.id)
    for _ in range(crashes):
        kill_after_stripe_charged(live, run.id)
    stalling_stripe["on"] = False
    outcome = engine.execute(run.id)
    stored = live.get(run.id)
    assert len(stripe.state.intents) == 1  # every attempt sent the same idempotency key
    [intent] = stripe.state.intents.values()
    if crashes < MAX_ATTEMPTS:
        # the fifth act: Stripe replays the charge it made, and the run records it
        assert outcome.status == "succeeded" and stored.attempts == MAX_ATTEMPTS, stored.error
        assert stored.result["response"]["id"] == intent["id"] and stored.settlement == "pending"
        assert len(stripe.requests_to("/v1/payment_intents")) == crashes + 1
    else:
        # given up without calling again; what a person needs to look it up is in the error
        assert stored.status == "needs_reconciliation", stored.error
        assert stored.error["reason"] == "too_many_attempts"
        assert stored.error["idempotency_key"] == f"aurora-{run.id}-stripe-charge"
        assert len(stripe.requests_to("/v1/payment_intents")) == crashes
        [record] = audit_records(live, run.id)  # the call that may have happened is on record
        assert (record.mode, record.outcome) == ("live", "unknown")
    intent["status"] = "succeeded"  # paid at Stripe, which the webhook's look-up of the intent sees
    body = json.dumps({"id": "evt_settle", "object": "event", "type": "payment_intent.succeeded",
                       "data": {"object": {**intent, "status": "succeeded"}}}).encode()
    assert intent["metadata"] == {"aurora_run_id": run.id}
    answer = post(client, "/webhooks/stripe", body,
                  **{"Stripe-Signature": stripe_header(body, secret=SECRETS["stripe"]["webhook_secret"])})
    assert answer.status_code == 200 and answer.json["run_id"] == run.id, answer.json
    stored = live.get(run.id)
    assert stored.status == "succeeded" and stored.settlement == "succeeded"
    records = [r for r in audit_records(live, run.id) if r.operation == "charge"]  # not the look-up
    # one ok record of the one charge; a given-up run keeps its unknown record, superseded by it
    assert [(r.mode, r.adapter, r.outcome) for r in records] == (
        [("live", "stripe", "ok")] if crashes < MAX_ATTEMPTS else [("live", "stripe", "unknown"), ("live", "stripe", "ok")])
    assert stored.result["response"]["id"] == intent["id"]
    with live.runtime.db.read() as session:
        settled = session.scalars(select(Event).where(Event.run_id == run.id, Event.type == "run.settled")).all()
    assert len(settled) == 1
    again = post(client, "/webhooks/stripe", body,
                 **{"Stripe-Signature": stripe_header(body, secret=SECRETS["stripe"]["webhook_secret"])})
    assert again.json["duplicate"] is True and len(audit_records(live, run.id)) == len(records) + 1


@pytest.fixture
def short_busy_timeout(live, monkeypatch):  # noqa: F811
    """SQLite writers of this test give up after 0.3 s instead of 30: a lock held longer is then
    what a database blip is, a failed transaction."""
    monkeypatch.setattr(aurora_db, "SQLITE_BUSY_TIMEOUT_MS", 300)
    aurora_db.forget(live.runtime.settings.database_url)
    live.runtime.__dict__.pop("db", None)
    live.runtime.__dict__.pop("engine", None)
    yield
    aurora_db.forget(live.runtime.settings.database_url)


def test_a_finish_that_fails_after_a_live_mail_is_retried_and_sends_once(live, short_busy_timeout, caplog) -> None:  # noqa: F811
    mailgun = live.servers["mailgun"]
    original = mailgun.default
    path = live.runtime.settings.database_url.removeprefix("sqlite:///")

    def send_then_lock(request):
        reply = original(request)  # the mail is sent
        blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN EXCLUSIVE")  # for 3 s nobody else may write (or read)

        def release() -> None:
            blocker.execute("COMMIT")
            blocker.close()

        threading.Timer(3, release).start()
        return reply

    mailgun.default = send_then_lock
    started = time.monotonic()
    run = live.run("send_email", {"to": "a@example.com", "subject": "s", "text": "t"})
    assert run.status == "succeeded", run.error
    assert time.monotonic() - started >= 3
    assert len(mailgun.state.sent) == 1
    [record] = audit_records(live, run.id)
    assert (record.mode, record.outcome) == ("live", "ok")
    assert any("could not write its outcome" in r.getMessage() for r in caplog.records)


def test_a_finish_that_lost_its_lease_writes_no_record_and_the_next_attempt_finishes_it(live) -> None:  # noqa: F811
    mailgun, engine = live.servers["mailgun"], live.runtime.engine
    original = mailgun.default
    taken: list[str] = []

    def send_while_reclaimed(request):
        reply = original(request)
        run_id = request.form()["v:aurora_run_id"][0]
        with live.runtime.db.write() as session:  # the sweeper and another worker took the run meanwhile
            session.execute(update(Run).where(Run.id == run_id).values(
                lease_owner="other:1:worker", lease_expires_at=utcnow()))
        taken.append(run_id)
        return reply

    mailgun.default = send_while_reclaimed
    from aurora import documents

    run = engine.submit(documents.load(json.dumps({"name": "m", "goal": "send_email", "payload": {
        "to": "a@example.com", "subject": "s", "text": "t"}}), fmt="json"), "sam")
    first = engine.execute(run.id)
    assert first.status == "lease_lost" and taken == [run.id]
    assert audit_records(live, run.id) == []  # the finish that lost its lease recorded nothing
    with live.runtime.db.read() as session:
        act = session.scalar(select(RunStep).where(RunStep.run_pk == select(Run.pk).where(Run.id == run.id).scalar_subquery(), RunStep.step == "act"))
    assert act.status == "started" and act.result["kept"]["result"]["response"]["id"]
    mailgun.default = original
    time.sleep(0.01)
    again = engine.execute(run.id)  # the lease lapsed: the next attempt finishes from the kept outcome
    assert again.status == "succeeded"
    assert len(mailgun.state.sent) == 1 and len(mailgun.received) == 1
    [record] = audit_records(live, run.id)
    assert (record.mode, record.outcome) == ("live", "ok")
    stored = live.get(run.id)
    assert stored.result["response"]["id"] == act.result["kept"]["result"]["response"]["id"]
    with live.runtime.db.read() as session:
        assert session.scalar(select(func.count()).select_from(Event).where(
            Event.run_id == run.id, Event.type == "run.succeeded")) == 1


def harness_on(live, **env: str) -> Live:  # noqa: F811
    """The live harness (same fake providers) with a runtime of its own, with these settings."""
    settings = {**live.env, **env}
    upgrade(settings["AURORA_DATABASE_URL"])
    aurora_db.forget(settings["AURORA_DATABASE_URL"])  # engines made anew, with this test's busy timeout
    harness = Live(Runtime(load_settings(settings)), settings, live.servers)
    return harness


def blip_after_send(harness: Live, seconds: float) -> None:
    """Mailgun sends the mail, then the database is unavailable for ``seconds`` before the answer
    comes back: SQLite is locked by another connection, PostgreSQL refuses every connection."""
    mailgun = harness.servers["mailgun"]
    original, url = mailgun.default, harness.runtime.settings.database_url

    def send_then_blip(request):
        reply = original(request)
        if url.startswith("sqlite"):
            blocker = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False)
            blocker.execute("BEGIN EXCLUSIVE")
            end = [blocker.execute, "COMMIT"]
        else:
            import psycopg

            name = url.rsplit("/", 1)[1]
            blocker = psycopg.connect(os.environ.get("AURORA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
                                      autocommit=True)
            blocker.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            blocker.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            end = [blocker.execute, f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true']

        def release() -> None:
            end[0](end[1])
            blocker.close()

        threading.Timer(seconds, release).start()
        return reply

    mailgun.default = send_then_blip


def test_a_finish_that_fails_after_a_live_mail_on_postgresql_is_retried_and_sends_once(
        live, postgres_url, caplog) -> None:  # noqa: F811
    harness = harness_on(live, AURORA_DATABASE_URL=postgres_url)
    blip_after_send(harness, 3)
    run = harness.run("send_email", {"to": "a@example.com", "subject": "s", "text": "t"})
    assert run.status == "succeeded", run.error
    assert len(harness.servers["mailgun"].state.sent) == 1
    [record] = audit_records(harness, run.id)
    assert (record.mode, record.outcome) == ("live", "ok")
    assert any("could not write its outcome" in r.getMessage() for r in caplog.records)
    aurora_db.forget(postgres_url)


def test_a_finish_that_cannot_be_written_within_its_lease_is_never_sent_again(live, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setattr(aurora_db, "SQLITE_BUSY_TIMEOUT_MS", 300)
    harness = harness_on(live, AURORA_LEASE_SECONDS="1")
    blip_after_send(harness, 3)  # longer than the lease
    engine = harness.runtime.engine
    from aurora import documents

    run = engine.submit(documents.load(json.dumps({"name": "m", "goal": "send_email", "payload": {
        "to": "a@example.com", "subject": "s", "text": "t"}}), fmt="json"), "sam")
    assert engine.execute(run.id).status == "unfinished"
    deadline = time.monotonic() + 10
    while True:  # once the database is back, the sweeper finds the lease lapsed
        assert time.monotonic() < deadline
        try:
            if engine.sweep() == [run.id]:
                break
        except OperationalError:
            pass  # still locked
        time.sleep(0.2)
    assert engine.execute(run.id).status == "needs_reconciliation"  # it may have been sent: never again
    assert len(harness.servers["mailgun"].state.sent) == 1
    [record] = audit_records(harness, run.id)
    assert (record.mode, record.outcome) == ("live", "unknown")
    stored = harness.get(run.id)
    assert stored.error["idempotency_key"] == f"aurora-{run.id}-mailgun-send"
    aurora_db.forget(harness.runtime.settings.database_url)

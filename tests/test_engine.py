"""The run state machine on a real database: SQLite here, PostgreSQL in the same tests."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from conftest import whole_run
from sqlalchemy import func, select, update

from aurora import audit, documents
from aurora.engine import MAX_ATTEMPTS, Engine
from aurora.errors import Conflict
from aurora.models import Approval, AuditRecord, Event, Run, RunStep, utcnow

MAIL = "name: mail\ngoal: send_email\npayload: {to: a@example.com, subject: Hi, text: Hallo}\n"
CHARGE = 'name: pay\ngoal: charge\npayload: {customer: cus_1, amount: "9.99", currency: EUR}\n'


@pytest.fixture
def engine(each_db) -> Engine:
    return each_db.engine


def count(engine: Engine, model, *where) -> int:
    with engine.db.read() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def run_of(engine: Engine, run_id: str) -> Run:
    with engine.db.read() as session:
        return whole_run(session, session.scalar(select(Run).where(Run.id == run_id)))


def event_types(engine: Engine, run_id: str) -> list[str]:
    with engine.db.read() as session:
        return list(session.scalars(select(Event.type).where(Event.run_id == run_id).order_by(Event.seq)))


def test_a_mail_run_goes_queued_running_succeeded_with_events_and_audit(engine: Engine) -> None:
    run = engine.submit(documents.load(MAIL), "sam")
    assert run.status == "queued"
    outcome = engine.execute(run.id)
    assert outcome.status == "succeeded"
    stored = run_of(engine, run.id)
    assert stored.result["dry_run"] is True and stored.result["msg"] == "Simulated mail send"
    assert stored.result["request"]["form"]["to"] == ["a@example.com"]
    assert event_types(engine, run.id) == ["run.queued", "run.running", "run.succeeded"]
    assert count(engine, AuditRecord, AuditRecord.run_id == run.id) == 1
    with engine.db.read() as session:
        record = session.scalar(select(AuditRecord).where(AuditRecord.run_id == run.id))
        assert record.mode == "simulated" and record.reason == "policy: dry_run is true"
        assert audit.verify(session.scalars(select(AuditRecord).order_by(AuditRecord.pk)), engine.db.audit_key())[0]


def test_executing_again_never_repeats_a_step(engine: Engine) -> None:
    run = engine.submit(documents.load(MAIL), "sam")
    engine.execute(run.id)
    again = engine.execute(run.id)
    assert again.status == "succeeded" and "not claimable" in again.detail
    assert count(engine, AuditRecord, AuditRecord.run_id == run.id) == 1


def test_concurrent_duplicate_deliveries_act_once(engine: Engine) -> None:
    run = engine.submit(documents.load(MAIL), "sam")
    outcomes = []
    threads = [threading.Thread(target=lambda: outcomes.append(engine.execute(run.id))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # One thread acts; the others find the run held or already finished.
    assert {o.status for o in outcomes} <= {"running", "succeeded"} and len(outcomes) == 4
    assert count(engine, AuditRecord, AuditRecord.run_id == run.id) == 1
    assert event_types(engine, run.id).count("run.succeeded") == 1
    assert event_types(engine, run.id).count("run.running") == 1


def test_critical_runs_wait_for_a_quorum_then_act(engine: Engine) -> None:
    run = engine.submit(documents.load(CHARGE), "sam")
    assert engine.execute(run.id).status == "awaiting_approval"
    stored = run_of(engine, run.id)
    assert stored.approvals_required == 2 and stored.gate_deadline is not None
    assert count(engine, AuditRecord, AuditRecord.run_id == run.id) == 0
    with engine.db.write() as session:
        for voter in ("sam", "alice", "bob"):  # the submitter's own vote never counts
            session.add(Approval(run_id=run.id, voter=voter, decision="approve", channel="api",
                                 document_hash=stored.document_hash,
                                 request_hash=stored.approval_binding["hash"]))
        session.execute(update(Run).where(Run.id == run.id).values(status="queued"))
    assert engine.execute(run.id).status == "succeeded"
    assert run_of(engine, run.id).result["request"]["form"]["amount"] == 999


def test_a_rejection_ends_the_run_without_acting(engine: Engine) -> None:
    run = engine.submit(documents.load(CHARGE), "sam")
    engine.execute(run.id)
    with engine.db.write() as session:
        session.add(Approval(run_id=run.id, voter="alice", decision="reject", channel="api",
                             document_hash=run.document_hash,
                             request_hash=run_of(engine, run.id).approval_binding["hash"]))
        session.execute(update(Run).where(Run.id == run.id).values(status="queued"))
    assert engine.execute(run.id).status == "rejected"
    assert count(engine, AuditRecord, AuditRecord.run_id == run.id) == 0


def test_cancel_before_acting_and_conflict_after(engine: Engine) -> None:
    run = engine.submit(documents.load(MAIL), "sam")
    assert engine.cancel(run.id, "sam") == "cancelled"
    assert engine.execute(run.id).status == "cancelled"
    assert count(engine, AuditRecord, AuditRecord.run_id == run.id) == 0
    done = engine.submit(documents.load(MAIL), "sam")
    engine.execute(done.id)
    with pytest.raises(Conflict, match="succeeded"):
        engine.cancel(done.id, "sam")


def test_a_running_run_cannot_be_cancelled_once_it_acts(engine: Engine) -> None:
    run = engine.submit(documents.load(MAIL), "sam")
    with engine.db.write() as session:
        session.execute(update(Run).where(Run.id == run.id).values(
            status="running", step="act", lease_owner="w", lease_expires_at=utcnow() + timedelta(minutes=1)))
    with pytest.raises(Conflict, match="carrying out its action"):
        engine.cancel(run.id, "sam")


def test_sweeper_reclaims_a_lapsed_lease_and_the_run_finishes_once(engine: Engine) -> None:
    run = engine.submit(documents.load(MAIL), "sam")
    # A worker claimed it, began the act step and died: its lease lapsed.
    with engine.db.write() as session:
        session.execute(update(Run).where(Run.id == run.id).values(
            status="running", step="act", attempts=1, lease_owner="dead",
            lease_expires_at=utcnow() - timedelta(seconds=1)))
        session.add(RunStep(run_pk=session.scalar(select(Run.pk).where(Run.id == run.id)), step="act", status="started"))
    assert engine.sweep() == [run.id]
    assert run_of(engine, run.id).status == "queued"
    assert engine.sweep() == []
    assert engine.execute(run.id).status == "succeeded"
    assert run_of(engine, run.id).attempts == 2
    assert count(engine, AuditRecord, AuditRecord.run_id == run.id) == 1


def test_a_live_lease_is_not_taken_over(engine: Engine) -> None:
    run = engine.submit(documents.load(MAIL), "sam")
    with engine.db.write() as session:
        session.execute(update(Run).where(Run.id == run.id).values(
            status="running", lease_owner="busy", lease_expires_at=utcnow() + timedelta(minutes=1)))
    assert engine.execute(run.id).status == "running"
    assert engine.sweep() == []


def test_sweeper_resends_forgotten_queued_runs_and_expires_gates(engine: Engine) -> None:
    lost = engine.submit(documents.load(MAIL), "sam")
    waiting = engine.submit(documents.load(CHARGE), "sam")
    engine.execute(waiting.id)
    with engine.db.write() as session:
        session.execute(update(Run).where(Run.id == lost.id).values(enqueued_at=utcnow() - timedelta(hours=1)))
        session.execute(update(Run).where(Run.id == waiting.id).values(gate_deadline=utcnow() - timedelta(seconds=1)))
    assert engine.sweep(waiting=1) == []  # its message may be the one still waiting in the broker
    assert engine.sweep(waiting=0) == [lost.id]
    assert run_of(engine, waiting.id).status == "expired"
    assert "run.requeued" in event_types(engine, lost.id)
    assert engine.sweep(waiting=0) == []  # sent again just now: not again at the next sweep


def test_the_sweeper_goes_by_the_database_clock_not_its_own(engine: Engine, monkeypatch) -> None:
    from aurora import sweeper

    waiting = engine.submit(documents.load(CHARGE), "sam")
    engine.execute(waiting.id)
    # A system worker whose own clock runs four days fast expires no 72-hour gate.
    monkeypatch.setattr(sweeper, "utcnow", lambda: utcnow() + timedelta(days=4))
    assert engine.sweep(waiting=0) == []
    assert run_of(engine, waiting.id).status == "awaiting_approval"


def test_a_run_whose_message_keeps_getting_lost_is_failed_not_resent_forever(engine: Engine) -> None:
    from aurora.sweeper import MAX_RESENDS

    run = engine.submit(documents.load(MAIL), "sam")
    for _ in range(MAX_RESENDS):
        with engine.db.write() as session:
            session.execute(update(Run).where(Run.id == run.id).values(enqueued_at=utcnow() - timedelta(hours=1)))
        assert engine.sweep(waiting=0) == [run.id]
    with engine.db.write() as session:
        session.execute(update(Run).where(Run.id == run.id).values(enqueued_at=utcnow() - timedelta(hours=1)))
    assert engine.sweep(waiting=0) == []
    failed = run_of(engine, run.id)
    assert failed.status == "failed" and failed.error["type"] == "lost_too_often"


def test_a_backlog_is_not_resent_only_the_messages_it_lost(engine: Engine) -> None:
    runs = [engine.submit(documents.load(MAIL), "sam") for _ in range(30)]
    with engine.db.write() as session:  # all of them old, in order of submission
        for age, run in enumerate(reversed(runs)):
            session.execute(update(Run).where(Run.id == run.id).values(
                enqueued_at=utcnow() - timedelta(hours=1, seconds=age)))
    # The broker holds the 30 messages: a backlog, nothing is lost.
    assert engine.sweep(waiting=30) == []
    # A worker took the two oldest messages and died before claiming: the broker holds 28.
    assert engine.sweep(waiting=28) == [runs[1].id, runs[0].id]
    # The broker cannot tell (down): nothing is sent.
    assert engine.sweep(waiting=None) == []


def test_a_run_that_keeps_crashing_is_failed_not_looped(engine: Engine) -> None:
    run = engine.submit(documents.load(MAIL), "sam")
    with engine.db.write() as session:
        session.execute(update(Run).where(Run.id == run.id).values(attempts=MAX_ATTEMPTS))
    assert engine.execute(run.id).status == "failed"
    assert run_of(engine, run.id).error["type"] == "too_many_attempts"


def test_analyse_routes_then_asks_the_chosen_engine(engine: Engine) -> None:
    run = engine.submit(documents.load("name: a\ngoal: analyse\npayload: {text: Recherchiere Studien zu PBM}"), "sam")
    engine.execute(run.id)
    stored = run_of(engine, run.id)
    assert stored.result["request"]["url"].startswith("https://api.perplexity.ai")
    with engine.db.read() as session:
        step = session.scalar(select(RunStep).where(RunStep.run_pk == select(Run.pk).where(Run.id == run.id).scalar_subquery(), RunStep.step == "route"))
        assert step.result["engine"] == "perplexity"


def test_event_sequence_is_monotonic_and_audit_chain_detects_tampering(engine: Engine) -> None:
    for _ in range(3):
        engine.execute(engine.submit(documents.load(MAIL), "sam").id)
    with engine.db.read() as session:
        rows = list(session.execute(select(Event.seq, Event.created_at).order_by(Event.seq)))
        assert [r.created_at for r in rows] == sorted(r.created_at for r in rows)
    with engine.db.write() as session:
        first = session.scalar(select(AuditRecord).order_by(AuditRecord.pk).limit(1))
        first.reason = "edited"
    with engine.db.read() as session:
        intact, bad_pk, *_ = audit.verify(session.scalars(select(AuditRecord).order_by(AuditRecord.pk)),
                                          engine.db.audit_key())
        assert not intact and bad_pk == first.pk


def _steps(engine: Engine, run_id: str) -> dict[str, tuple[str, int]]:
    with engine.db.read() as session:
        return {s.step: (s.status, s.attempt) for s in session.scalars(select(RunStep).where(RunStep.run_pk == select(Run.pk).where(Run.id == run_id).scalar_subquery()))}


def _claim_planned_ahead(engine: Engine, run_id: str, meanwhile) -> object:
    """Plan a run as a worker does before its transaction, let ``meanwhile`` happen, then claim."""
    from aurora.adapters import CallContext

    ctx = CallContext(run_id, engine.policies.current(), engine.secrets())
    ahead = engine._plan_ahead(run_id, ctx)
    assert ahead is not None and ahead[1].simulated is not None  # a fresh dry run is planned in full
    meanwhile()
    return engine._claim(run_id, "late:1:worker", ctx, ahead)


def test_a_run_settled_in_one_statement_leaves_the_same_record_as_one_claimed_step_by_step(engine: Engine) -> None:
    fresh = engine.submit(documents.load(MAIL), "sam")
    assert engine.execute(fresh.id).detail == "simulated"
    retried = engine.submit(documents.load(MAIL), "sam")
    with engine.db.write() as session:  # a first attempt that died before it acted: not fresh any more
        session.execute(update(Run).where(Run.id == retried.id).values(
            status="running", attempts=1, lease_owner="dead", lease_expires_at=utcnow() - timedelta(seconds=1)))
    assert engine.execute(retried.id).status == "succeeded"
    a, b = run_of(engine, fresh.id), run_of(engine, retried.id)
    assert (a.status, a.step, a.attempts, a.lease_owner, a.error) == ("succeeded", "act", 1, None, None)
    assert json.dumps(a.result).replace(fresh.id, "RUN") == json.dumps(b.result).replace(retried.id, "RUN")
    assert a.started_at and a.finished_at
    assert event_types(engine, fresh.id) == ["run.queued", "run.running", "run.succeeded"]
    assert _steps(engine, fresh.id) == {"route": ("done", 1), "gate": ("done", 1), "act": ("done", 1)}
    assert _steps(engine, retried.id) == {"route": ("done", 1), "gate": ("done", 1), "act": ("done", 2)}
    with engine.db.read() as session:
        records = {r.run_id: r for r in session.scalars(select(AuditRecord))}
        assert json.dumps(records[fresh.id].request).replace(fresh.id, "RUN") == \
            json.dumps(records[retried.id].request).replace(retried.id, "RUN")
        assert audit.verify(session.scalars(select(AuditRecord).order_by(AuditRecord.pk)), engine.db.audit_key())[0]


def test_a_cancel_between_planning_and_claiming_wins(engine: Engine) -> None:
    run = engine.submit(documents.load(MAIL), "sam")
    outcome = _claim_planned_ahead(engine, run.id, lambda: engine.cancel(run.id, "sam"))
    assert (outcome.status, outcome.detail) == ("cancelled", "not claimable")
    assert run_of(engine, run.id).status == "cancelled"
    assert count(engine, AuditRecord, AuditRecord.run_id == run.id) == 0
    assert _steps(engine, run.id) == {}


def test_a_run_another_worker_finished_after_the_plan_is_not_settled_twice(engine: Engine) -> None:
    run = engine.submit(documents.load(MAIL), "sam")
    outcome = _claim_planned_ahead(engine, run.id, lambda: engine.execute(run.id))
    assert (outcome.status, outcome.detail) == ("succeeded", "not claimable")
    assert event_types(engine, run.id) == ["run.queued", "run.running", "run.succeeded"]
    assert count(engine, AuditRecord, AuditRecord.run_id == run.id) == 1


def test_passing_the_gate_is_not_an_attempt(engine: Engine) -> None:
    run = engine.submit(documents.load(CHARGE), "sam")
    for _ in range(MAX_ATTEMPTS + 2):  # claimed again and again while votes come in
        assert engine.execute(run.id).status == "awaiting_approval"
        with engine.db.write() as session:
            session.execute(update(Run).where(Run.id == run.id).values(status="queued"))
    assert run_of(engine, run.id).attempts == 0
    stored = run_of(engine, run.id)
    with engine.db.write() as session:
        for voter in ("alice", "bob"):
            session.add(Approval(run_id=run.id, voter=voter, decision="approve", channel="api",
                                 document_hash=stored.document_hash,
                                 request_hash=stored.approval_binding["hash"]))
    assert engine.execute(run.id).status == "succeeded"
    assert run_of(engine, run.id).attempts == 1
    assert count(engine, AuditRecord, AuditRecord.run_id == run.id) == 1


def test_four_concurrent_workers_keep_one_linear_audit_chain(engine: Engine) -> None:
    """The run's UPDATE takes the outbox locks and the chain's head is read under them (with the
    next record's key): records appended at once by four workers, and by ledger notes between
    them, still form one chain, in key order, with no two records sealed onto the same head."""
    from aurora import keys
    from aurora.models import Role

    workflow = documents.load(MAIL)
    batches = [[engine.submit(workflow, "sam").id for _ in range(12)] for _ in range(4)]
    start = threading.Barrier(5)
    failures: list[BaseException] = []

    def worker(run_ids: list[str]) -> None:
        try:
            start.wait()
            for run_id in run_ids:
                assert engine.execute(run_id, owner=f"w{id(run_ids)}:1:worker").status == "succeeded"
        except BaseException as exc:  # noqa: BLE001 - reported below, in the test's thread
            failures.append(exc)

    def ledger() -> None:  # another writer of the chain: audit.note takes the locks itself
        try:
            start.wait()
            for i in range(6):
                keys.create(engine.db, f"k{i}", Role.SUBMITTER)
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(b,)) for b in batches] + [threading.Thread(target=ledger)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    with engine.db.read() as session:
        records = list(session.scalars(select(AuditRecord).order_by(AuditRecord.pk)))
        verdict = audit.verify(records, engine.db.audit_key())
    assert verdict.intact, verdict
    assert len({r.prev_hash for r in records}) == len(records) == verdict.count
    assert count(engine, AuditRecord, AuditRecord.run_id.in_([r for b in batches for r in b])) == 48


def test_a_settle_that_fails_half_way_commits_nothing(engine: Engine, monkeypatch) -> None:
    """The audit and steps INSERTs are sent (in one pipeline on PostgreSQL) before the events
    INSERT fails: the error reaches the caller and none of the transaction is kept — not the
    run's UPDATE, not the audit record — and the chain goes on intact."""
    from sqlalchemy.exc import IntegrityError

    from aurora import engine as engine_module

    run = engine.submit(documents.load(MAIL), "sam")
    real = engine_module.events.append_many

    def broken(db, session, _origin, *args, **kwargs):
        return real(db, session, None, *args, **kwargs)  # origin is NOT NULL: the INSERT fails

    monkeypatch.setattr(engine_module.events, "append_many", broken)
    with pytest.raises(IntegrityError):
        engine.execute(run.id)
    monkeypatch.setattr(engine_module.events, "append_many", real)
    assert run_of(engine, run.id).status == "queued"
    assert count(engine, AuditRecord) == 0
    assert _steps(engine, run.id) == {}
    assert event_types(engine, run.id) == ["run.queued"]
    assert engine.execute(run.id).status == "succeeded"
    assert event_types(engine, run.id) == ["run.queued", "run.running", "run.succeeded"]
    with engine.db.read() as session:
        assert audit.verify(session.scalars(select(AuditRecord).order_by(AuditRecord.pk)), engine.db.audit_key())[0]

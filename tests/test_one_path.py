"""A dry run takes one of two paths (docs/architecture.md, "One path"): a fresh run planned ahead
to a simulated outcome is claimed and finished in one statement — a step of a workflow hands
its workflow on in that same commit —, and every other run, simulated or live, is claimed, acted
and finished in two transactions, as a live call is."""

from __future__ import annotations

import pytest
from conftest import shown
from sqlalchemy import event, func, select
from sqlalchemy.engine.base import OptionEngine

from aurora import approvals, documents, flow_runs
from aurora.keys import Caller
from aurora.models import AuditRecord, Event, Role, Run, RunStep

TWO = """name: two
steps:
  - {id: first, goal: send_email, payload: {to: a@example.com, subject: Eins, text: Hallo}}
  - {id: second, goal: send_email, needs: [first], payload: {to: b@example.com, subject: Zwei, text: Hallo}}
"""
REVIEWED = "name: reviewed\ngoal: send_email\npayload: {to: a@example.com, subject: Hi, text: Hallo, require_approval: true}\n"


@pytest.fixture
def engine(each_db):
    return each_db.engine


class Commits:
    def __init__(self, engine) -> None:
        self.engines = {engine.db.engine, engine.db._immediate}
        self.count = 0

    def _commit(self, _conn) -> None:
        self.count += 1

    def __enter__(self) -> Commits:
        for sql_engine in self.engines:
            event.listen(sql_engine, "commit", self._commit)
        return self

    def __exit__(self, *_) -> None:
        for sql_engine in self.engines:
            event.remove(sql_engine, "commit", self._commit)


def test_a_step_settled_fresh_hands_its_workflow_on_in_its_own_commit(engine) -> None:
    flow = engine.submit(documents.load(TWO), "sam")
    [first] = flow_runs.ready_steps(engine, flow.id)
    with Commits(engine) as commits:
        outcome = engine.execute(first)
    assert outcome.status == "succeeded"
    assert commits.count == 1  # the step's outcome and the next step, together
    [(second, delay)] = outcome.follow_up
    assert delay is None
    with engine.db.read() as session:
        row = session.execute(select(Run.step_id, Run.status, Run.parent_id).where(Run.id == second)).one()
        timeline = list(session.scalars(select(Event.type).where(Event.run_id == flow.id).order_by(Event.seq)))
    assert tuple(row) == ("second", "queued", flow.id)
    assert sorted(timeline[-2:]) == ["step.started", "step.succeeded"]
    assert engine.execute(second).status == "succeeded"
    with engine.db.read() as session:
        assert session.scalar(select(Run.status).where(Run.id == flow.id)) == "succeeded"


def test_an_approved_dry_run_is_claimed_acted_and_finished_as_a_live_call_is(engine) -> None:
    run = engine.submit(documents.load(REVIEWED), "sam")
    assert engine.execute(run.id).status == "awaiting_approval"
    for who in ("alice", "bob"):  # as many as the policy's quorum asks for
        with engine.db.read() as session:
            if session.scalar(select(Run.status).where(Run.id == run.id)) != "awaiting_approval":
                break
        approvals.vote(engine, run.id, Caller(who, Role.APPROVER), "approve", None, "api", shown(engine, run.id))
    with Commits(engine) as commits:
        outcome = engine.execute(run.id)
    assert outcome.status == "succeeded"
    assert commits.count == 2  # the claim (gate passed, act begun), then the finish
    with engine.db.read() as session:
        calls = session.scalar(select(func.count()).select_from(AuditRecord).where(
            AuditRecord.run_id == run.id, AuditRecord.operation == "send", AuditRecord.mode == "simulated"))
        assert calls == 1  # the call, once (the votes have their own records)
        run_pk = select(Run.pk).where(Run.id == run.id).scalar_subquery()
        act = session.execute(select(RunStep.status, RunStep.result).where(
            RunStep.run_pk == run_pk, RunStep.step == "act")).one()
        assert session.scalar(select(Run.result).where(Run.id == run.id))["dry_run"] is True
    assert act.status == "done" and act.result["mode"] == "simulated"


class Statements(Commits):
    """The statements run on ``engine``'s database (reads included)."""

    def __init__(self, engine) -> None:
        super().__init__(engine)
        self.engines = {e for e in (engine.db.engine, engine.db._immediate, engine.db._single_read)
                        if not isinstance(e, OptionEngine)}
        self.event = "before_cursor_execute"

    def _count(self, *_) -> None:
        self.count += 1

    def __enter__(self) -> Statements:
        for sql_engine in self.engines:
            event.listen(sql_engine, self.event, self._count)
        return self

    def __exit__(self, *_) -> None:
        for sql_engine in self.engines:
            event.remove(sql_engine, self.event, self._count)


def test_the_worker_that_created_the_next_step_runs_it_without_reading_it_back(engine) -> None:
    counts = []
    for handed_on in (True, False):  # two alike workflows: the second step from its row, or read back
        flow = engine.submit(documents.load(TWO), "sam")
        [first] = flow_runs.ready_steps(engine, flow.id)
        outcome = engine.execute(first)
        [(second, _)] = outcome.follow_up
        [row] = outcome.fresh
        assert row.id == second and row.attempts == 0 and row.parent_id == flow.id
        with Statements(engine) as statements:
            assert engine.execute(second, fresh=row if handed_on else None).status == "succeeded"
        counts.append(statements.count)
    assert counts[0] == counts[1] - 1


def test_a_handed_on_row_of_a_step_no_longer_fresh_acts_on_nothing(engine) -> None:
    flow = engine.submit(documents.load(TWO), "sam")
    [first] = flow_runs.ready_steps(engine, flow.id)
    [row] = engine.execute(first).fresh
    engine.cancel(flow.id, "sam")  # between the two: the step is cancelled, the row says queued
    assert engine.execute(row.id, fresh=row).status == "cancelled"
    with engine.db.read() as session:
        assert session.scalar(select(Run.status).where(Run.id == row.id)) == "cancelled"
        assert session.scalar(select(func.count()).select_from(AuditRecord).where(AuditRecord.run_id == row.id)) == 0


def test_the_last_step_ends_its_workflow_in_its_own_statement_and_tells_the_waiters(engine) -> None:
    heard: list[dict[str, list[str]]] = []
    engine.db.on_commit = heard.append
    flow = engine.submit(documents.load(TWO), "sam")
    [first] = flow_runs.ready_steps(engine, flow.id)
    [row] = engine.execute(first).fresh
    heard.clear()
    assert engine.execute(row.id, fresh=row).status == "succeeded"
    assert heard == [{row.id: ["run.running", "run.succeeded"], flow.id: ["run.succeeded"]}]
    with engine.db.read() as session:
        timeline = list(session.scalars(select(Event.type).where(Event.run_id.in_([flow.id, row.id]))
                                        .order_by(Event.seq)))
        assert session.scalar(select(Run.status).where(Run.id == flow.id)) == "succeeded"
    assert timeline[-4:] == ["run.running", "run.succeeded", "step.succeeded", "run.succeeded"]


def test_a_submit_announces_nothing_of_the_run_it_creates_and_its_end_is_announced(engine) -> None:
    # Nobody can wait for a run before its id is told, after the submit's commit: a note of its
    # creation would cost a publish and wake every web process for nobody.
    heard: list[dict[str, list[str]]] = []
    engine.db.on_commit = heard.append
    run = engine.submit(documents.load("name: one\ngoal: send_email\npayload: {to: a@example.com, subject: Hi, text: Hallo}\n"),
                        "sam")
    assert heard == []
    assert engine.execute(run.id).status == "succeeded"
    assert heard == [{run.id: ["run.running", "run.succeeded"]}]
    with engine.db.read() as session:  # the outbox still holds its creation
        assert session.scalar(select(Event.type).where(Event.run_id == run.id).order_by(Event.seq)) == "run.queued"


def test_a_waiting_submitter_is_answered_with_the_request_its_audit_record_holds(engine) -> None:
    from aurora import runs as run_views

    run = engine.submit(documents.load(REVIEWED.replace("require_approval: true", "require_approval: false")), "sam")
    engine.execute(run.id)
    with engine.db.read_rows() as connection:
        answer = run_views.outcome(connection, run.id)
    with engine.db.read() as session:
        shown_whole = run_views.detail(session, run.id)
    assert answer is not None and answer["status"] == "succeeded"
    assert answer["result"] == shown_whole["result"] and "request" in answer["result"]
    assert "in_audit" not in answer["result"]


def test_a_workflow_its_submission_already_ends_announces_that_end(engine) -> None:
    # Its submitter's answer was made from the row as inserted ("running"): the note of the end
    # is what ends the wait at once (not the waiter's next re-read, up to 20 s later).
    heard: list[dict[str, list[str]]] = []
    engine.db.on_commit = heard.append
    flow = engine.submit(documents.load(
        "name: never\nsteps:\n  - id: a\n    goal: send_email\n    if: \"false\"\n"
        "    payload: {to: a@example.com, subject: Hi, text: Hallo}\n"), "sam")
    with engine.db.read() as session:
        status = session.scalar(select(Run.status).where(Run.id == flow.id))
    assert status not in ("queued", "running")
    [note] = heard
    assert f"run.{status}" in note[flow.id] and "run.queued" not in note[flow.id]

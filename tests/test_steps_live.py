"""Steps that act live against fake providers: a retry after a refused call, a rerun that never
repeats a live effect, the sweeper advancing a workflow whose worker died, a step's timeout."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fakes import Reply
from sqlalchemy import select, update
from test_adapters_live import live  # noqa: F401 - the fixture: fake providers and a live policy

from aurora import documents, flow_runs
from aurora.errors import Conflict
from aurora.models import Approval, Run, utcnow

FLOW = """name: welcome_then_pay
steps:
  - id: welcome
    goal: send_email
    retry: {attempts: 2}
    payload: {to: neu@example.com, subject: Willkommen, text: Hallo}
  - id: charge
    goal: charge
    needs: [welcome]
    payload: {customer: cus_declined, amount: "9.99", currency: EUR, payment_method: pm_1}
"""


def drive(engine, run_id: str) -> None:
    todo = [run_id]
    while todo:
        todo += [follow for follow, _ in engine.execute(todo.pop(0)).follow_up]


def children(runtime, parent_id: str) -> dict[str, Run]:
    with runtime.db.read() as session:
        return {r.step_id: r for r in session.scalars(
            select(Run).where(Run.parent_id == parent_id).order_by(Run.step_attempt))}


def approve(runtime, run: Run) -> None:
    with runtime.db.write() as session:
        for voter in ("alice", "bob"):
            session.add(Approval(run_id=run.id, voter=voter, decision="approve", channel="api",
                                 document_hash=run.document_hash, request_hash=run.approval_binding["hash"]))
        session.execute(update(Run).where(Run.id == run.id).values(status="queued"))


def test_a_refused_step_is_tried_again_and_a_rerun_never_repeats_the_live_mail(live) -> None:  # noqa: F811
    runtime, engine = live.runtime, live.runtime.engine
    mailgun = live.servers["mailgun"]
    mailgun.script("/v3", Reply(400, {"message": "try again"}))
    run_id = engine.submit(documents.load(FLOW), "sam").id
    drive(engine, run_id)
    welcome = children(runtime, run_id)["welcome"]
    assert welcome.status == "succeeded" and welcome.step_attempt == 2  # the 400, then a second attempt
    assert welcome.result["mode"] == "live" and len(mailgun.state.sent) == 1
    charge = children(runtime, run_id)["charge"]
    assert charge.status == "awaiting_approval"
    approve(runtime, charge)
    drive(engine, charge.id)
    with runtime.db.read() as session:
        parent = session.scalar(select(Run).where(Run.id == run_id))
    assert parent.status == "failed" and parent.error["step"] == "charge" and "declined" in parent.error["message"]

    with pytest.raises(Conflict, match="acted live"):
        flow_runs.rerun(engine, run_id, "sam", "sam", from_step="welcome")
    again = flow_runs.rerun(engine, run_id, "sam", "sam")  # from what did not succeed: the charge
    drive(engine, again.id)
    steps = children(runtime, again.id)
    assert steps["welcome"].status == "succeeded" and steps["welcome"].result["reused_from"] == welcome.id
    assert len(mailgun.state.sent) == 1, "the live mail was not sent again"
    assert steps["charge"].status == "awaiting_approval"


def test_the_sweeper_advances_a_workflow_whose_worker_died_before_handing_it_on(live) -> None:  # noqa: F811
    live.set_policy(dry_run=True)
    engine = live.runtime.engine
    run_id = engine.submit(documents.load(FLOW.replace("cus_declined", "cus_1")), "sam").id
    engine.execute(run_id)
    welcome = children(live.runtime, run_id)["welcome"]
    # The step ends, and its worker dies before it advances the workflow (what execute does next).
    engine._execute(welcome.id, "worker:1:dies")  # noqa: SLF001
    assert "charge" not in children(live.runtime, run_id)
    sent = flow_runs.advance_all(engine)
    assert [rid for rid, _ in sent] == [children(live.runtime, run_id)["charge"].id]
    assert flow_runs.advance_all(engine) == []  # advancing again creates nothing twice


def test_a_step_that_waits_past_its_timeout_expires_and_fails_the_workflow(live) -> None:  # noqa: F811
    live.set_policy(dry_run=True)
    engine = live.runtime.engine
    text = FLOW.replace("    needs: [welcome]\n", "    needs: [welcome]\n    timeout: 60\n")
    run_id = engine.submit(documents.load(text), "sam").id
    drive(engine, run_id)
    charge = children(live.runtime, run_id)["charge"]
    assert charge.status == "awaiting_approval"
    assert abs((charge.gate_deadline - charge.created_at) - timedelta(seconds=60)) < timedelta(seconds=1)
    with live.runtime.db.write() as session:
        session.execute(update(Run).where(Run.id == charge.id).values(gate_deadline=utcnow() - timedelta(seconds=1)))
    engine.sweep()
    for rid, _ in flow_runs.advance_all(engine):
        drive(engine, rid)
    with live.runtime.db.read() as session:
        parent = session.scalar(select(Run).where(Run.id == run_id))
    assert children(live.runtime, run_id)["charge"].status == "expired"
    assert parent.status == "failed" and parent.error["type"] == "step_expired"

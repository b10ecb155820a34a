"""Approval gates: quorum of distinct people, no self-approval, one veto, votes bound to the
payload, deadlines that expire, races with exactly one outcome, the API and the notification."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from conftest import seen, shown
from sqlalchemy import select, update

from aurora import approvals, documents, keys, runs
from aurora.errors import Conflict, PermissionDenied
from aurora.keys import Caller
from aurora.models import AuditRecord, Event, Role, Run, utcnow

CHARGE = 'name: pay\ngoal: charge\npayload: {customer: cus_1, amount: "9.99", currency: EUR}\n'
ALICE, BOB, CAROL = (Caller(n, Role.APPROVER) for n in ("alice", "bob", "carol"))


@pytest.fixture
def engine(each_db):
    return each_db.engine


def waiting_run(engine, text: str = CHARGE, by: str = "sam") -> str:
    run = engine.submit(documents.load(text), by)
    assert engine.execute(run.id).status == "awaiting_approval"
    return run.id


def status(engine, run_id: str) -> str:
    with engine.db.read() as session:
        return session.scalar(select(Run.status).where(Run.id == run_id))


def event_types(engine, run_id: str) -> list[str]:
    with engine.db.read() as session:
        return list(session.scalars(select(Event.type).where(Event.run_id == run_id).order_by(Event.seq)))


def test_quorum_of_two_distinct_approvers_then_one_execution(engine) -> None:
    run_id = waiting_run(engine)
    first = approvals.vote(engine, run_id, ALICE, "approve", "ok", "api", shown(engine, run_id))
    assert first["status"] == "awaiting_approval" and first["gate"]["received"] == 1 and first["gate"]["missing"] == 1
    with pytest.raises(approvals.AlreadyVoted):
        approvals.vote(engine, run_id, ALICE, "approve", None, "api", shown(engine, run_id))
    second = approvals.vote(engine, run_id, BOB, "approve", None, "cli", shown(engine, run_id))
    assert second["status"] == "queued"
    assert engine.execute(run_id).status == "succeeded"
    with pytest.raises(approvals.GateClosed, match="succeeded"):
        approvals.vote(engine, run_id, CAROL, "approve", None, "api", shown(engine, run_id))


def test_submitter_never_approves_their_own_run_even_as_admin(engine) -> None:
    run_id = waiting_run(engine, by="boss")
    with pytest.raises(approvals.SelfApproval):
        approvals.vote(engine, run_id, Caller("boss", Role.ADMIN), "approve", None, "api", shown(engine, run_id))
    with pytest.raises(PermissionDenied, match="may not vote"):
        approvals.vote(engine, run_id, Caller("vic", Role.VIEWER), "approve", None, "api", shown(engine, run_id))
    with pytest.raises(PermissionDenied, match="may not vote"):
        approvals.vote(engine, run_id, Caller("sue", Role.SUBMITTER), "approve", None, "api", shown(engine, run_id))


def test_one_rejection_ends_the_run(engine) -> None:
    run_id = waiting_run(engine)
    approvals.vote(engine, run_id, ALICE, "approve", None, "api", shown(engine, run_id))
    assert approvals.vote(engine, run_id, BOB, "reject", "wrong amount", "web", shown(engine, run_id))["status"] == "rejected"
    assert status(engine, run_id) == "rejected"
    assert engine.execute(run_id).status == "rejected"


def test_votes_are_bound_to_the_payload_they_approved(engine) -> None:
    run_id = waiting_run(engine)
    approvals.vote(engine, run_id, ALICE, "approve", None, "api", shown(engine, run_id))
    assert approvals.vote(engine, run_id, BOB, "approve", None, "api", shown(engine, run_id))["status"] == "queued"
    changed = documents.load(CHARGE.replace("9.99", "999.99"))
    with engine.db.write() as session:  # the payload changes after the votes, before the act
        session.execute(update(Run).where(Run.id == run_id).values(document=changed.document,
                                                                   document_hash=changed.digest))
    assert engine.execute(run_id).status == "awaiting_approval"  # the request changed: votes void
    assert "approval.voided" in event_types(engine, run_id)
    with engine.db.read() as session:
        run = runs.detail(session, run_id)
    assert run["approvals"]["received"] == 0 and [v["counts"] for v in run["approvals"]["votes"]] == [False, False]
    assert {"label": "Amount", "value": "999.99 EUR"} in run["approval"]["plain"]
    approvals.vote(engine, run_id, BOB, "approve", None, "api", shown(engine, run_id))
    assert approvals.vote(engine, run_id, ALICE, "approve", "again, for the new amount", "api", shown(engine, run_id))["status"] == "queued"
    assert engine.execute(run_id).status == "succeeded"


def test_gate_is_rechecked_in_the_transaction_that_starts_execution(engine) -> None:
    run_id = waiting_run(engine)
    approvals.vote(engine, run_id, ALICE, "approve", None, "api", shown(engine, run_id))
    approvals.vote(engine, run_id, BOB, "approve", None, "api", shown(engine, run_id))
    changed = documents.load(CHARGE.replace("9.99", "1.00"))
    with engine.db.write() as session:  # approved, queued, then the payload changed
        session.execute(update(Run).where(Run.id == run_id).values(document=changed.document,
                                                                   document_hash=changed.digest))
    assert engine.execute(run_id).status == "awaiting_approval"
    with engine.db.read() as session:
        assert session.scalar(select(AuditRecord).where(AuditRecord.run_id == run_id,
                                                        AuditRecord.operation == "charge")) is None


def test_deadline_expires_and_never_approves(engine) -> None:
    run_id = waiting_run(engine)
    with engine.db.write() as session:
        session.execute(update(Run).where(Run.id == run_id).values(gate_deadline=utcnow() - timedelta(seconds=1)))
    with pytest.raises(approvals.GateClosed, match="deadline"):
        approvals.vote(engine, run_id, ALICE, "approve", None, "api", shown(engine, run_id))
    engine.sweep()
    assert status(engine, run_id) == "expired"


def race_once(engine) -> None:
    run_id = waiting_run(engine)
    approvals.vote(engine, run_id, ALICE, "approve", None, "api", shown(engine, run_id))
    with engine.db.write() as session:
        session.execute(update(Run).where(Run.id == run_id).values(
            gate_deadline=utcnow() + timedelta(milliseconds=30)))
    results: list[object] = []
    barrier = threading.Barrier(3)

    def voter(caller):
        barrier.wait()
        try:
            results.append(approvals.vote(engine, run_id, caller, "approve", None, "api", shown(engine, run_id))["status"])
        except Conflict as exc:
            results.append(type(exc).__name__)

    def sweeper():
        barrier.wait()
        threading.Event().wait(0.03)
        engine.sweep()

    threads = [threading.Thread(target=voter, args=(c,)) for c in (BOB, CAROL)] + [threading.Thread(target=sweeper)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = status(engine, run_id)
    types = event_types(engine, run_id)
    assert final in {"queued", "expired"}
    assert (types.count("run.queued") - 1) + types.count("run.expired") == 1, types
    if final == "queued":
        assert results.count("queued") == 1


def test_simultaneous_votes_and_the_deadline_have_exactly_one_outcome(engine) -> None:
    for _ in range(5):
        race_once(engine)


def test_notification_mail_links_to_the_page(env, engine) -> None:
    policy = json.loads(open(env["AURORA_POLICY_FILE"]).read())
    policy["approvals"]["notify"] = ["chef@example.com", "buchhaltung@example.com"]
    policy["approvals"]["link_base_url"] = "https://aurora.example.com"
    open(env["AURORA_POLICY_FILE"], "w").write(json.dumps(policy))
    engine.policies._mtime, engine.policies._checked_at = None, 0  # noqa: SLF001
    run_id = waiting_run(engine)
    with engine.db.read() as session:
        record = session.scalar(select(AuditRecord).where(AuditRecord.run_id == run_id,
                                                          AuditRecord.operation == "notify_approvers"))
    assert record.mode == "simulated" and record.adapter == "mailgun"
    assert record.request["form"]["to"] == ["chef@example.com", "buchhaltung@example.com"]
    assert f"https://aurora.example.com/ui/runs/{run_id}" in record.request["form"]["text"]
    assert "approval.notified" in event_types(engine, run_id)
    assert status(engine, run_id) == "awaiting_approval"


# -- the HTTP API --------------------------------------------------------------------------------

def test_api_votes_listing_and_errors(client, api_keys, runtime) -> None:
    bob = keys.create(runtime.db, "bob", Role.APPROVER)
    body = CHARGE.encode()
    run_id = client.post("/workflows", data=body, headers={"Content-Type": "application/yaml",
                                                           **api_keys.header("submitter")}).json["id"]
    runtime.engine.execute(run_id)
    listed = client.get("/approvals", headers=api_keys.header("approver")).json["waiting"]
    assert [(w["id"], w["required"], w["received"]) for w in listed] == [(run_id, 2, 0)]
    assert listed[0]["payload"]["amount"] == "9.99"
    assert client.get("/approvals", headers=api_keys.header("submitter")).json["waiting"] == []

    denied = client.post(f"/workflows/{run_id}/approve", json=seen(runtime, run_id), headers=api_keys.header("viewer"))
    assert denied.status_code == 403 and denied.json["error"] == "forbidden"
    own = client.post(f"/workflows/{run_id}/approve", json=seen(runtime, run_id), headers=api_keys.header("submitter"))
    assert own.status_code == 403
    ok = client.post(f"/workflows/{run_id}/approve", json=seen(runtime, run_id, comment="passt"), headers=api_keys.header("approver"))
    assert ok.status_code == 200 and ok.json["gate"]["received"] == 1
    twice = client.post(f"/workflows/{run_id}/approve", json=seen(runtime, run_id), headers=api_keys.header("approver"))
    assert twice.status_code == 409 and twice.json["error"] == "already_voted"
    bad = client.post(f"/workflows/{run_id}/approve", data="[1]", content_type="application/json",
                      headers={"Authorization": f"Bearer {bob}"})
    assert bad.status_code == 400
    done = client.post(f"/workflows/{run_id}/approve", json=seen(runtime, run_id), headers={"Authorization": f"Bearer {bob}",
                                                                "X-Aurora-Channel": "cli"})
    assert done.json["status"] == "queued"
    detail = client.get(f"/workflows/{run_id}", headers=api_keys.header("viewer")).json
    assert [(v["voter"], v["channel"], v["comment"]) for v in detail["approvals"]["votes"]] == [
        ("alice", "api", "passt"), ("bob", "cli", None)]
    assert detail["approvals"]["missing"] == 0 and detail["approvals"]["required"] == 2
    closed = client.post(f"/workflows/{run_id}/reject", json=seen(runtime, run_id), headers={"Authorization": f"Bearer {keys.create(runtime.db, 'carl', Role.APPROVER)}"})
    assert closed.status_code == 409 and closed.json["error"] == "gate_closed"
    missing = client.post("/workflows/nope/approve", json={"request_hash": "0" * 64}, headers=api_keys.header("approver"))
    assert missing.status_code == 404

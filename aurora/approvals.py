"""Votes on waiting runs, and the mail that tells approvers a run waits for them.

Every vote is appended to the ledger (``approvals``) with who, when, decision, comment, channel
and the document hash it was cast for. A vote, the quorum it completes and the run's move back to
the queue happen in one transaction, guarded by a compare-and-set on the run that also checks the
deadline: a vote and the expiry can never both win, and two votes completing the quorum together
send the run to the queue once.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import select, update

from . import audit, events, gates
from .errors import Conflict, NotFound, PermissionDenied
from .keys import Caller
from .models import Approval, Role, Run, RunStatus, utcnow

#: the ways a vote can arrive
CHANNELS = ("api", "cli", "web")


class SelfApproval(PermissionDenied):
    """Raised when the submitter of a run tries to vote on it."""

    code = "self_approval"


class AlreadyVoted(Conflict):
    """Raised when a person votes twice on the same version of a run."""

    code = "already_voted"


class GateClosed(Conflict):
    """Raised when a vote arrives for a run that no longer waits (decided, expired, cancelled)."""

    code = "gate_closed"


def _votes(session: Any, run_id: str) -> list[gates.Vote]:
    rows = session.scalars(select(Approval).where(Approval.run_id == run_id).order_by(Approval.pk))
    return [gates.Vote(a.voter, a.decision, a.document_hash) for a in rows]


def gate_summary(session: Any, run: Run) -> dict[str, Any]:
    decision = gates.evaluate(run.approvals_required, _votes(session, run.id), run.document_hash, run.submitted_by)
    return {**decision.as_dict(), "deadline": run.gate_deadline.isoformat() if run.gate_deadline else None}


def vote(engine: Any, run_id: str, caller: Caller, decision: str, comment: str | None, channel: str) -> dict[str, Any]:
    """Record one vote; return the run's status and gate. Enqueues the run if it completed the quorum."""
    if caller.role not in (Role.APPROVER, Role.ADMIN):
        raise PermissionDenied(f"role {caller.role.value!r} may not vote (needs approver or admin)")
    if decision not in ("approve", "reject"):
        raise ValueError(decision)
    if comment is not None and len(comment) > 2000:
        raise Conflict("comment is longer than 2000 characters")
    now = utcnow()
    db = engine.db
    with db.write() as session:
        run = session.scalar(select(Run).where(Run.id == run_id))
        if run is None:
            raise NotFound(f"no run {run_id}")
        if run.submitted_by == caller.name:
            raise SelfApproval("you submitted this run; somebody else must approve or reject it")
        # Lock the run for this transaction, and only while it still waits within its deadline.
        open_gate = session.execute(
            update(Run).where(Run.id == run_id, Run.status == RunStatus.AWAITING_APPROVAL.value,
                              Run.gate_deadline > now).values(updated_at=now)
        ).rowcount
        if not open_gate:
            session.refresh(run)
            state = "its approval deadline has passed" if run.status == RunStatus.AWAITING_APPROVAL.value \
                else f"it is {run.status}"
            raise GateClosed(f"the run no longer waits for votes: {state}")
        already = session.scalar(select(Approval.pk).where(
            Approval.run_id == run_id, Approval.voter == caller.name, Approval.document_hash == run.document_hash))
        if already is not None:
            raise AlreadyVoted("you already voted on this run")
        approval = Approval(run_id=run_id, voter=caller.name, decision=decision, comment=comment,
                            channel=channel, document_hash=run.document_hash, created_at=now)
        session.add(approval)
        events.append(db, session, engine.node, f"approval.{decision}d" if decision == "approve" else "approval.rejected",
                      {"voter": caller.name, "channel": channel, "document_hash": run.document_hash,
                       "comment": comment}, run_id=run_id)
        session.flush()
        audit.note_vote(db, session, approval)  # the chain is what proves who voted
        verdict = gates.evaluate(run.approvals_required, _votes(session, run_id), run.document_hash, run.submitted_by)
        status = run.status
        if verdict.state is gates.GateState.REJECTED:
            engine.transition(session, run_id, (RunStatus.AWAITING_APPROVAL,), RunStatus.REJECTED,
                              verdict.as_dict())
            status = RunStatus.REJECTED.value
        elif verdict.state is gates.GateState.OPEN:
            engine.transition(session, run_id, (RunStatus.AWAITING_APPROVAL,), RunStatus.QUEUED,
                              {"reason": "quorum reached", **verdict.as_dict()}, enqueued_at=now)
            status = RunStatus.QUEUED.value
        gate = {**verdict.as_dict(), "deadline": run.gate_deadline.isoformat() if run.gate_deadline else None}
    if status == RunStatus.QUEUED.value:
        from .queue import enqueue

        enqueue(run_id)
    return {"id": run_id, "status": status, "gate": gate}


def waiting_for(engine: Any, caller: Caller, limit: int = 100) -> list[dict[str, Any]]:
    """Runs waiting for approval that this caller may still vote on."""
    if caller.role not in (Role.APPROVER, Role.ADMIN):
        return []
    out = []
    with engine.db.read() as session:
        runs = session.scalars(select(Run).where(Run.status == RunStatus.AWAITING_APPROVAL.value)
                               .order_by(Run.pk).limit(limit * 2))
        for run in runs:
            votes = _votes(session, run.id)
            if run.submitted_by == caller.name or any(
                    v.voter == caller.name and v.document_hash == run.document_hash for v in votes):
                continue
            gate = gate_summary(session, run)
            out.append({"id": run.id, "name": run.name, "goal": run.goal, "submitted_by": run.submitted_by,
                        "created_at": run.created_at.isoformat(), "payload": run.document["payload"],
                        "required": gate["required"], "received": gate["received"], "missing": gate["missing"],
                        "deadline": gate["deadline"]})
            if len(out) >= limit:
                break
    return out


def notify(engine: Any, run_id: str, ctx: Any) -> None:
    """Mail the policy's approvers that a run waits, with a link to its page (never a vote link)."""
    from .adapters.mailgun_adapter import MailgunAdapter

    settings = ctx.policy.data.get("approvals", {})
    recipients = settings.get("notify") or []
    if not recipients:
        return
    with engine.db.read() as session:
        run = session.scalar(select(Run).where(Run.id == run_id))
        gate = gate_summary(session, run)
    link = f"{settings.get('link_base_url', 'http://127.0.0.1:9292').rstrip('/')}/ui/runs/{run_id}"
    payload = {"to": recipients, "subject": f"Aurora: approval needed for {run.name} ({run.goal})",
               "text": (f"The run {run.name} ({run.goal}) submitted by {run.submitted_by} waits for "
                        f"{gate['missing']} more approval(s) until {gate['deadline']}.\n\n"
                        f"Review it here: {link}\n\nOpening the page does not approve anything.")}
    adapter = MailgunAdapter()
    notify_ctx = replace(ctx, run_id=f"{run_id}-notify")
    try:
        result = adapter.call(payload, notify_ctx)
        outcome, response, mode = "ok", result.response, result.mode
    except Exception as exc:  # noqa: BLE001 - a failed notification must not fail the run
        outcome, response, mode = "error", {"error": str(exc)[:200]}, adapter.decide(payload, notify_ctx)
        result = None
    with engine.db.write() as session:
        audit.append(engine.db, session, run_id=run_id, adapter="mailgun", operation="notify_approvers",
                     mode=mode.name, reason=mode.reason,
                     request=ctx.secrets.redact(result.request if result else adapter.build(payload, notify_ctx)),
                     outcome=outcome, response=ctx.secrets.redact(response),
                     duration_ms=result.duration_ms if result else 0.0)
        events.append(engine.db, session, engine.node, "approval.notified",
                      {"to": recipients, "mode": mode.name, "link": link}, run_id=run_id)

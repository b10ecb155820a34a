"""Votes on waiting runs, and the mail that tells approvers a run waits for them.

Every vote is appended to the ledger (``approvals``) with who (the key and its person), when,
decision, comment, channel and the hash of the rendered request and mode it approved
(``aurora.binding``). A vote, the quorum it completes and the run's move back to the queue happen
in one transaction, guarded by a compare-and-set on the run that also checks the deadline: a vote
and the expiry can never both win, and two votes completing the quorum together send the run to
the queue once. Quorum counts people: a person votes once, with whichever key, and no key of the
submitter's person may vote. A vote names the rendering its voter saw (``request_hash``, required);
the vote's transaction renders the run again as the worker would now (``ledger.current``), and a
vote for anything else is refused: the voter is told to look again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select, update

from . import audit, binding, events, gates, ledger
from .errors import AuroraError, Conflict, NotFound, PermissionDenied
from .keys import Caller
from .models import ApiKey, Approval, Role, Run, RunStatus, utcnow

#: the ways a vote can arrive
CHANNELS = ("api", "cli", "web")


class SelfApproval(PermissionDenied):
    """Raised when the submitter of a run (any key of their person) tries to vote on it."""

    code = "self_approval"


class AlreadyVoted(Conflict):
    """Raised when a person votes twice on the same request of a run (from any of their keys)."""

    code = "already_voted"


class GateClosed(Conflict):
    """Raised when a vote arrives for a run that no longer waits (decided, expired, cancelled)."""

    code = "gate_closed"


class RequestChanged(Conflict):
    """Raised when a vote names a rendering of the request that is no longer the run's."""

    code = "request_changed"


class RequestHashMissing(AuroraError):
    """Raised when a vote does not say which rendering of the request the voter saw."""

    code = "request_hash_required"
    http_status = 400


def _votes(session: Any, run_id: str) -> list[gates.Vote]:
    return ledger.votes(session, run_id)


def _bound_hash(run: Run) -> str | None:
    return (run.approval_binding or {}).get("hash")


def gate_summary(session: Any, run: Run) -> dict[str, Any]:
    decision = gates.evaluate(run.approvals_required, _votes(session, run.id), _bound_hash(run), ledger.submitter(run))
    return {**decision.as_dict(), "deadline": run.gate_deadline.isoformat() if run.gate_deadline else None}


def approval_view(run: Run) -> dict[str, Any] | None:
    """What approvers see of a run: ``aurora.binding.view`` of its rendered request."""
    return binding.view(run.goal, run.document.get("payload", {}), run.approval_binding)


def vote(engine: Any, run_id: str, caller: Caller, decision: str, comment: str | None, channel: str,
         request_hash: str | None) -> dict[str, Any]:
    """Record one vote; return the run's status and gate. Enqueues the run if it completed the
    quorum. ``request_hash`` is the rendering the voter saw (``approval.hash``): required (a vote
    that names none is refused, 400), and a vote for another rendering is refused (409) rather
    than counted for what the voter did not see."""
    if not request_hash:
        raise RequestHashMissing(
            "request_hash: required: the approval.hash of the rendering you reviewed (GET /workflows/<id> or "
            "GET /approvals show it; `aurora approvals` prints it); a vote counts only for what its voter saw")
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
        parent_id = run.parent_id
        if ledger.submitter(run) == caller.person:
            raise SelfApproval("you submitted this run (with one of your keys); somebody else must approve or "
                               "reject it")
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
        if session.scalar(select(ApiKey.revoked_at).where(ApiKey.name == caller.name)) is not None:
            raise PermissionDenied("your key was revoked")
        if _bound_hash(run) is None:
            raise RequestChanged("the run's request has not been rendered for approval yet; try again shortly")
        # What it would send now (the policy, the secrets, a rollout may have changed while it
        # waited): a vote counts for that, not for a rendering nobody would send any more.
        now_bound = ledger.current(engine, session, run)
        if now_bound is not None:
            ledger.restore(db, session, engine.node, run, now_bound)
        bound = _bound_hash(run)
        if request_hash != bound:
            raise RequestChanged("what this run would send, or whether it is live, changed since you looked: "
                                 "look at it again and vote on what it sends now")
        ledger_votes = _votes(session, run_id)
        if any(v.who == caller.person and gates.counts(v, bound, "") for v in ledger_votes):
            raise AlreadyVoted("you already voted on this run (a person votes once, with any of their keys)")
        approval = Approval(run_id=run_id, voter=caller.name, person=caller.person, decision=decision,
                            comment=comment, channel=channel, document_hash=run.document_hash,
                            request_hash=bound, created_at=now)
        session.add(approval)
        events.append(db, session, engine.node, f"approval.{decision}d" if decision == "approve" else "approval.rejected",
                      {"voter": caller.name, "person": caller.person, "channel": channel,
                       "document_hash": run.document_hash, "request_hash": bound,
                       "mode": (run.approval_binding or {}).get("mode"), "comment": comment}, run_id=run_id)
        session.flush()
        audit.note_vote(db, session, approval)  # the chain is what proves who voted
        verdict = gates.evaluate(run.approvals_required, _votes(session, run_id), bound, ledger.submitter(run))
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
    elif status == RunStatus.REJECTED.value and parent_id:
        from . import flow_runs

        # no worker finishes a step rejected here: its workflow moves on now (a rejection only
        # skips steps, so nothing new is sent)
        flow_runs.advance(engine, parent_id)
    return {"id": run_id, "status": status, "gate": gate}


def waiting_for(engine: Any, caller: Caller, limit: int = 100) -> list[dict[str, Any]]:
    """Runs waiting for approval that this caller's person may still vote on, each with what it
    would send and whether live (``approval``)."""
    if caller.role not in (Role.APPROVER, Role.ADMIN):
        return []
    out = []
    with engine.db.read() as session:
        ids = list(session.scalars(select(Run.id).where(Run.status == RunStatus.AWAITING_APPROVAL.value)
                                   .order_by(Run.pk).limit(limit * 2)))
    ledger.refresh(engine, ids)  # what each would send now, not when it began to wait
    with engine.db.read() as session:
        runs = session.scalars(select(Run).where(Run.status == RunStatus.AWAITING_APPROVAL.value)
                               .order_by(Run.pk).limit(limit * 2))
        for run in runs:
            votes = _votes(session, run.id)
            bound = _bound_hash(run)
            if ledger.submitter(run) == caller.person or any(
                    v.who == caller.person and gates.counts(v, bound, "") for v in votes):
                continue
            gate = gate_summary(session, run)
            view = approval_view(run)
            out.append({"id": run.id, "name": run.name, "goal": run.goal, "submitted_by": run.submitted_by,
                        "submitted_by_person": ledger.submitter(run),
                        "created_at": run.created_at.isoformat(), "payload": run.document["payload"],
                        "required": gate["required"], "received": gate["received"], "missing": gate["missing"],
                        "deadline": gate["deadline"], "approval": view,
                        **({"workflow": run.parent_id, "step_id": run.step_id} if run.parent_id else {}),
                        "mode": view["mode"] if view else None, "reason": view["reason"] if view else None})
            if len(out) >= limit:
                break
    return out


def mail_text(run: Run, gate: dict[str, Any], link: str, again: bool) -> str:
    """The notification: the request in plain words, live or simulated and why, then in full."""
    view = approval_view(run)
    lines = [f"The run {run.name} ({run.goal}) submitted by {ledger.submitter(run)} waits for "
             f"{gate['missing']} more approval(s) until {gate['deadline']}."]
    if again:
        lines.append("You are asked again: earlier votes no longer count (a key was revoked, a person removed, "
                     "or what the run would send changed).")
    if view is not None:
        lines += ["", f"It will be {'LIVE' if view['live'] else 'SIMULATED'}: {view['reason']}", ""]
        lines += [f"{row['label']}: {row['value']}" for row in view["plain"]]
    lines += ["", f"Review it here: {link}", "", "Opening the page does not approve anything."]
    if view is not None:
        lines += ["", "The exact request (credentials redacted):",
                  json.dumps(view["request"], indent=2, ensure_ascii=False)]
    return "\n".join(lines)


@dataclass(frozen=True)
class _Waiting:
    """The grant of the one live call that is not a run's act: the mail to the policy's approvers
    that a run waits for them (it may go out only while that run waits)."""

    db: Any
    run_id: str

    def refusal(self, _: str | None) -> str | None:
        with self.db.read() as session:
            status = session.scalar(select(Run.status).where(Run.id == self.run_id))
        return None if status == RunStatus.AWAITING_APPROVAL.value else f"run {self.run_id} does not wait for votes"


def notify(engine: Any, run_id: str, ctx: Any, again: bool = False) -> None:
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
    payload = {"to": recipients, "subject": f"Aurora: approval needed{' again' if again else ''} for {run.name} "
                                            f"({run.goal})", "text": mail_text(run, gate, link, again)}
    adapter = MailgunAdapter()
    notify_ctx = replace(ctx, run_id=f"{run_id}-notify", grant=_Waiting(engine.db, run_id))
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

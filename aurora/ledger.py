"""The approval ledger as the gate reads it: votes with their person and whether they still count.

Shared by the worker's gate (:func:`gate`, in the claim's transaction) and the vote itself (``aurora.approvals``), so both
count the same votes: a vote of a revoked key, or of a removed person, is void; a vote bound to
another rendering of the request (``aurora.binding``) does not count for this one.

The gate that begins the act reads the votes' keys and people ``FOR SHARE`` (``lock=True``): a
revocation (an ``UPDATE`` of those rows) waits for the act's transaction, or the gate waits for
the revocation and sees it; a revoked vote cannot count in between (READ COMMITTED would let it).

What a waiting run shows approvers is rendered again with the policy, secrets and rollouts in
force whenever it is looked at or voted on (:func:`refresh`, :func:`current`), as the worker will
render it, so a vote names what would be sent now.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update

from . import events, gates
from .binding import bind
from .errors import ConfigError
from .models import ApiKey, Approval, FormCursor, Person, Run, RunStatus, RunStep

__all__ = ["bind", "current", "gate", "rebind", "refresh", "submitter", "votes"]

_VOTES = (
    select(Approval.voter, Approval.decision, Approval.request_hash,
           func.coalesce(Approval.person, Approval.voter).label("person"),
           ApiKey.revoked_at, Person.removed_at)
    .outerjoin(ApiKey, ApiKey.name == Approval.voter)
    .outerjoin(Person, Person.name == func.coalesce(Approval.person, Approval.voter))
    .order_by(Approval.pk)
)


def votes(session: Any, run_id: str, lock: bool = False) -> list[gates.Vote]:
    """Every vote on a run, oldest first, each marked void if its key or person is gone. With
    ``lock`` (the transaction that begins the act) the voters' keys and people are read ``FOR
    SHARE`` first, so a concurrent revocation is either seen or waits until the act has begun."""
    if lock and session.bind.dialect.name == "postgresql":
        voters = select(Approval.voter).where(Approval.run_id == run_id)
        people = select(func.coalesce(Approval.person, Approval.voter)).where(Approval.run_id == run_id)
        # one row at a time in key order: two gates never lock the same rows in opposite orders
        session.execute(select(ApiKey.pk).where(ApiKey.name.in_(voters)).order_by(ApiKey.pk)
                        .with_for_update(read=True)).all()
        session.execute(select(Person.name).where(Person.name.in_(people)).order_by(Person.name)
                        .with_for_update(read=True)).all()
    out = []
    for row in session.execute(_VOTES.where(Approval.run_id == run_id)):
        void = None
        if row.removed_at is not None:
            void = f"person {row.person!r} was removed"
        elif row.revoked_at is not None:
            void = f"key {row.voter!r} was revoked"
        out.append(gates.Vote(row.voter, row.decision, row.request_hash, row.person, void))
    return out


def gate(engine: Any, session: Any, run: Any, required: int, policy: Any, now: Any, bound: dict[str, Any]) -> Any:
    """None if the claimed run may act; otherwise the ``Outcome`` that stops it at its gate.
    ``bound`` is the rendered request and mode the votes must have approved (``aurora.binding``)."""
    from .engine import Outcome

    ledger = votes(session, run.id, lock=True)  # a revocation now waits for this transaction
    decision = gates.evaluate(required, ledger, bound["hash"], submitter(run))
    rebind(engine.db, session, engine.node, run, bound, ledger)
    if decision.state is gates.GateState.OPEN:
        return None
    if decision.state is gates.GateState.REJECTED:
        engine.transition(session, run.id, (RunStatus.RUNNING,), RunStatus.REJECTED, decision.as_dict(),
                          approvals_required=required, step="gate", attempts=run.attempts - 1)
        return Outcome(run.id, RunStatus.REJECTED.value, f"rejected by {decision.rejected_by}")
    deadline = run.gate_deadline or now + timedelta(seconds=policy.approval_timeout_seconds)
    engine.transition(session, run.id, (RunStatus.RUNNING,), RunStatus.AWAITING_APPROVAL,
                      {**decision.as_dict(), "deadline": deadline.isoformat(), "mode": bound["mode"],
                       "reason": bound["reason"], "request_hash": bound["hash"]},
                      approvals_required=required, gate_deadline=deadline, step="gate", approval_binding=bound,
                      lease_owner=None, lease_expires_at=None,
                      attempts=run.attempts - 1)  # only a claim that acts counts as an attempt
    return Outcome(run.id, RunStatus.AWAITING_APPROVAL.value, f"{decision.missing} approval(s) missing")


def submitter(run: Any) -> str:
    """The person who submitted a run (runs stored before 0007: the key's name)."""
    return run.submitted_by_person or run.submitted_by


def rebind(db: Any, session: Any, node: str, run: Any, binding: dict[str, Any], ledger: list[gates.Vote]) -> None:
    """Tell the run's timeline when a new rendering of its request voids earlier votes."""
    old = run.approval_binding or {}
    if old.get("hash") == binding["hash"]:
        return
    stale = [v for v in ledger if v.void is None and v.request_hash == old.get("hash") and v.request_hash != binding["hash"]]
    if not stale:
        return
    changed = [k for k in ("request", "mode", "reason", "engines", "facts") if old.get(k) != binding.get(k)]
    events.append(db, session, node, "approval.voided", {
        "reason": "what the run would send, or whether it is live, changed after these votes: "
                  + ", ".join(changed or ["request"]) + "; approvers are asked again",
        "voters": [v.voter for v in stale], "people": sorted({v.who for v in stale}),
        "mode": binding["mode"], "was_mode": old.get("mode"), "request_hash": binding["hash"],
    }, run_id=run.id)


def current(engine: Any, session: Any, run: Any) -> dict[str, Any] | None:
    """The binding the worker would make for a waiting run now (``Engine._claim`` makes it the
    same way: the plan's payload, the form cursor, the mode with the rollouts read in
    ``session``); None when the policy or secrets cannot be used (the stored one stands: the
    worker renders again before it acts, and the run is blocked until then)."""
    from dataclasses import replace

    from . import adapter_state, pipeline
    from .adapters import BY_GOAL, CallContext
    from .blocking import usable

    try:
        policy, secrets = usable(engine.policies, engine.secrets)
    except ConfigError:
        return None
    ctx = CallContext(run.id, policy, secrets, engine.settings.simulated_latency_ms, engine.health(policy),
                      limiter=engine.limiter)
    steps = {row.step: row for row in session.scalars(select(RunStep).where(RunStep.run_pk == run.pk))}
    payload = pipeline.plan(run, steps, ctx).payload
    adapter = BY_GOAL[run.goal]
    if run.goal == "ingest_forms":
        cursor = session.get(FormCursor, adapter.form_id(payload, ctx))
        if cursor is not None and cursor.after:
            payload["after"] = cursor.after
    ctx = replace(ctx, rollouts=adapter_state.Rollouts(session))
    return bind(adapter, payload, ctx, adapter.decide(payload, ctx))


def restore(db: Any, session: Any, node: str, run: Any, binding: dict[str, Any]) -> bool:
    """Make ``binding`` the waiting run's (in the caller's write transaction): its earlier votes
    for another rendering stop counting, and the timeline says so. Whether it changed."""
    if (run.approval_binding or {}).get("hash") == binding["hash"]:
        return False
    rebind(db, session, node, run, binding, votes(session, run.id))
    session.execute(update(Run).where(Run.id == run.id, Run.status == RunStatus.AWAITING_APPROVAL.value)
                    .values(approval_binding=binding))
    run.approval_binding = binding
    return True


def refresh(engine: Any, run_ids: list[str]) -> None:
    """Render waiting runs again (:func:`current`) and store each rendering that changed, so what
    approvers see is what the worker would send now; the write happens only for a change, and
    only if nobody changed the run in between."""
    changed = []
    with engine.db.read() as session:
        for run in session.scalars(select(Run).where(Run.id.in_(run_ids),
                                                     Run.status == RunStatus.AWAITING_APPROVAL.value)):
            old = (run.approval_binding or {}).get("hash")
            new = current(engine, session, run) if old else None
            if new is not None and new["hash"] != old:
                changed.append((run.id, old, new))
    for run_id, old, new in changed:
        with engine.db.write() as session:
            run = session.scalar(select(Run).where(Run.id == run_id))
            if run.status == RunStatus.AWAITING_APPROVAL.value and (run.approval_binding or {}).get("hash") == old:
                restore(engine.db, session, engine.node, run, new)

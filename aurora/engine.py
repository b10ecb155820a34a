"""The run state machine and its pipeline: route -> gate -> act.

Every status change is a compare-and-set ``UPDATE ... WHERE status IN (...)`` that appends its
event in the same transaction, so two workers, a redelivered message, a cancel and a sweeper can
race freely: exactly one of them wins each transition. A worker holds a *lease* on the run it
executes, renewed while it works; the sweeper hands runs with a lapsed lease to another worker.
Finished steps are recorded and never run again.

    queued ──> running ──> succeeded | failed | needs_reconciliation | not_acted (aurora.outcomes)
      ^  │        ├──> awaiting_approval ──> queued (quorum reached) | rejected | expired
      │  │        └──> rejected
      │  └──> cancelled  (also from running before it acts, and from awaiting_approval)
      └── running (lease lapsed: reclaimed by the sweeper)
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cached_property
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import (
    adapter_state,
    audit,
    changes,
    deferral,
    events,
    finishing,
    flow_runs,
    idempotency,
    ledger,
    metrics,
    pipeline,
    run_sql,
    sweeper,
)
from .adapters import BY_GOAL, CallContext, Mode
from .adapters.base import LiveCallFailed, RetryLater
from .adapters.engines import DEFAULT_FALLBACK
from .blocking import block as block_run
from .blocking import usable
from .config import Settings
from .db import OUTBOX_LOCKS, Database, connection_of
from .documents import Workflow, refuse_over_ceiling
from .engine_health import HealthStore
from .errors import AuroraError, ConfigError, Conflict, NotFound
from .leases import ActLease, LeaseKeeper
from .logs import RUN_ID
from .models import FINAL_STATUSES, FormCursor, Run, RunStatus, utcnow
from .outcomes import pretends, stop_not_acted
from .policy import Policy, PolicyStore
from .run_sql import RUNS
from .secrets import Secrets

log = logging.getLogger(__name__)

#: a run whose act was begun this many times without finishing is given up instead of tried
#: again (a claim that only passes its gate does not count: ``attempts`` counts act starts)
MAX_ATTEMPTS = 5
#: statuses from which a cancel is accepted (``running`` only until the act step begins)
CANCELLABLE = (RunStatus.QUEUED, RunStatus.AWAITING_APPROVAL, RunStatus.RUNNING)
FINAL = frozenset(status.value for status in FINAL_STATUSES)


@dataclass(frozen=True)
class Outcome:
    """What one ``execute`` call did with the run."""

    run_id: str
    status: str
    detail: str = ""
    #: of a run finished inside the claim transaction: counted in the metrics after it commits
    goal: str = ""
    created_at: datetime | None = None
    #: live | simulated | none (it did not act), for the metrics
    mode: str = "none"
    #: runs to send to the workers now, each with its delay in seconds: a step's workflow when
    #: the step ended, a workflow's steps that became ready (``aurora.flow_runs``)
    follow_up: tuple[tuple[str, float | None], ...] = ()
    #: the workflow the run is a step of (None: none), when the path that finished it read it;
    #: :data:`aurora.flow_runs.PARENT_UNREAD` otherwise (``flow_runs.follow_up`` then asks)
    parent_id: str | None = flow_runs.PARENT_UNREAD
    #: the rows of the ``follow_up`` runs this transaction created, as ``run_sql.FRESH`` reads
    #: them (the worker that runs one next passes it to ``execute``: no read of what it wrote)
    fresh: tuple[Any, ...] = ()


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Engine:
    """Core operations on runs. Knows nothing of HTTP or Celery."""

    def __init__(self, settings: Settings, db: Database, policies: PolicyStore, secrets: Callable[[], Secrets],
                 limiter: Any = None):
        self.settings = settings
        self.db = db
        self.policies = policies
        self.secrets = secrets
        self.limiter = limiter

    def health(self, policy: Policy) -> HealthStore:
        fallback = {**DEFAULT_FALLBACK, **policy.routing.get("fallback", {})}
        return HealthStore(self.db, fallback["failures_before_cooldown"], fallback["cooldown_seconds"])

    @property
    def node(self) -> str:
        return self.settings.node_name

    # -- transitions -------------------------------------------------------------------------

    def transition(
        self,
        session: Session,
        run_id: str,
        from_statuses: tuple[RunStatus, ...],
        to: RunStatus,
        event_data: dict[str, Any] | None = None,
        where: str | None = None,
        where_params: dict[str, Any] | None = None,
        announce: bool = True,
        **fields: Any,
    ) -> bool:
        """Compare-and-set the run's status; append ``run.<to>`` if it moved (unless not
        ``announce``: the caller then appends it).

        ``where`` names an extra condition of :data:`aurora.run_sql.CONDITIONS`, with its
        ``w_`` parameters in ``where_params``.
        """
        now = utcnow()
        if to.final:
            fields.setdefault("finished_at", now)
            fields.setdefault("lease_owner", None)
            fields.setdefault("lease_expires_at", None)
        statement = run_sql.transition(tuple(s.value for s in from_statuses), to.value, tuple(sorted(fields)), where)
        params = {"rid": run_id, "now": now, **(where_params or {}), **{f"v_{k}": v for k, v in fields.items()}}
        moved = connection_of(session).execute(statement, params).rowcount
        if moved and announce:
            events.append(self.db, session, self.node, f"run.{to.value}", event_data or {}, run_id=run_id, at=now)
        return bool(moved)

    # -- submission and cancel ---------------------------------------------------------------

    def submit(self, workflow: Workflow, submitter: str, person: str | None = None) -> Run:
        """Store a validated workflow as a queued run (the caller then enqueues its id).
        ``submitter`` is the key's name, ``person`` its holder (default: the same name)."""
        return self.submit_once(workflow, submitter, None, person)[0]

    def submit_once(self, workflow: Workflow, submitter: str, idempotency_key: str | None,
                    person: str | None = None, origin: dict[str, Any] | None = None,
                    trigger: dict[str, Any] | None = None) -> tuple[Run, bool]:
        """Like :meth:`submit`; with a key, the run an earlier submission with that key (by the same
        submitter) made, if there is one. Returns the run and whether it is new. ``origin``: the
        stored definition and version it comes from; ``trigger``: what started it (its timeline
        says so: ``run.triggered``)."""
        if workflow.goal == "charge":  # other runs are stored even without a usable policy (then blocked)
            refuse_over_ceiling(workflow, self.policies.current())
        policy = None
        if workflow.is_flow:  # its first steps are created with it, under the policy read now
            try:
                policy = self.policies.current()
            except ConfigError:
                policy = None  # stored without steps: the first advance creates them, or blocks
        for attempt in (1, 2):
            now = utcnow()
            values = flow_runs.new_flow_values(workflow, submitter, person) if workflow.is_flow else {
                "id": str(uuid.uuid4()), "name": workflow.name, "goal": workflow.goal, "document": workflow.document,
                "document_hash": workflow.digest, "status": RunStatus.QUEUED.value, "submitted_by": submitter,
                "submitted_by_person": person or submitter,
                "approvals_required": 0, "attempts": 0, "created_at": now, "updated_at": now, "enqueued_at": now,
            }
            values.update(origin or {})
            try:
                with self.db.write_rows() as connection:
                    # The key's row first, in the run's transaction: a racing twin waits on it here.
                    earlier = idempotency_key and idempotency.claim(
                        connection, submitter, idempotency_key, workflow.digest, values["id"], now)
                    if earlier:
                        row = connection.execute(select(RUNS).where(RUNS.c.id == earlier)).mappings().one()
                        return Run(**row), False
                    connection.execute(run_sql.INSERT_RUN, values)
                    changes.born(values["id"])
                    events.append(self.db, connection, self.node, "run.queued",
                                  {"name": workflow.name, "goal": workflow.goal, "submitted_by": submitter,
                                   **({"steps": len(workflow.document["steps"]), "inputs": sorted(workflow.inputs or {})}
                                      if workflow.is_flow else {})},
                                  run_id=values["id"], at=values["created_at"])
                    if trigger is not None:
                        events.append(self.db, connection, self.node, "run.triggered", trigger,
                                      run_id=values["id"], at=values["created_at"])
                    if policy is not None:
                        flow_runs.begin(self, connection, values, policy)
            except IntegrityError:
                if idempotency_key is None or attempt == 2:
                    raise
                continue  # the twin committed first: the second pass finds its run
            return Run(**values), True
        raise AssertionError("unreachable")  # pragma: no cover

    def cancel(self, run_id: str, by: str) -> str:
        """Cancel a run that has not begun its action; return the new status."""
        with self.db.write() as session:
            run = session.scalar(select(Run).where(Run.id == run_id))
            if run is None:
                raise NotFound(f"no run {run_id}")
            parent_id = run.parent_id
            if self.transition(session, run_id, CANCELLABLE, RunStatus.CANCELLED, {"by": by}, where="not_acting"):
                if run.goal == flow_runs.FLOW_GOAL:
                    flow_runs.cancel_steps(self, session, run_id, by)
            else:
                session.refresh(run)
                if run.status == RunStatus.CANCELLED.value:
                    return run.status
                if run.status == RunStatus.RUNNING.value:
                    raise Conflict("the run is already carrying out its action and can no longer be cancelled")
                raise Conflict(f"the run is {run.status} and can no longer be cancelled")
        if parent_id:  # a step cancelled on its own: its workflow moves on now, not at the next sweep
            flow_runs.advance(self, parent_id)  # (a cancel only skips steps: nothing new to send)
        return RunStatus.CANCELLED.value

    # -- execution ---------------------------------------------------------------------------

    def execute(self, run_id: str, owner: str | None = None, fresh: Any = None) -> Outcome:
        """Move a run as far as it can go now. Safe to call any number of times, concurrently.
        ``fresh``: the run's row as an earlier outcome's ``fresh`` has it (the claim still checks
        that the run is fresh: this only spares reading it)."""
        owner = owner or worker_identity()
        token = RUN_ID.set(run_id)
        try:
            outcome = self._execute(run_id, owner, fresh)
        finally:
            RUN_ID.reset(token)
        return flow_runs.follow_up(self, outcome)

    def _execute(self, run_id: str, owner: str, fresh: Any = None) -> Outcome:
        try:
            policy, secrets = usable(self.policies, self.secrets)
        except ConfigError as exc:  # it cannot act now: say so, visibly, and let the sweeper retry
            return block_run(self, run_id, exc)
        ctx = CallContext(run_id, policy, secrets, self.settings.simulated_latency_ms, self.health(policy),
                          limiter=self.limiter)
        ahead = self._plan_ahead(run_id, ctx, fresh)
        plan = self._settle_fresh(ahead[0], owner, ahead[1], policy) if ahead and ahead[1].simulated else None
        plan = plan or self._claim(run_id, owner, ctx, ahead)
        if isinstance(plan, Outcome) and plan.created_at is not None:  # finished in the claim's transaction
            log.info("run %s: %s (%s, in one transaction)", run_id, plan.status, plan.detail,
                     extra={"step": "finish", "mode": plan.mode, "status": plan.status})
            metrics.run_finished(plan.goal, plan.status, (utcnow() - plan.created_at).total_seconds(), plan.mode)
            return plan
        if plan is None or isinstance(plan, Outcome):
            if plan is not None:
                log.info("run %s: %s (%s)", run_id, plan.status, plan.detail, extra={"step": "claim"})
            if plan is not None and plan.status == RunStatus.AWAITING_APPROVAL.value and plan.detail != "not claimable":
                from .approvals import notify

                notify(self, run_id, ctx)
            return plan or Outcome(run_id, "missing", "no such run")
        run, payload, mode, ctx = plan
        adapter = BY_GOAL[run.goal]
        log.info("run %s: attempt %d, acting through %s (%s: %s)", run_id, run.attempts, adapter.name, mode.name,
                 mode.reason, extra={"step": "act", "mode": mode.name, "attempt": run.attempts, "goal": run.goal})
        error: dict[str, Any] | None = None
        rollback: str | None = None
        # The lease is held until the outcome is written: the finish may wait out a database blip.
        with self.leases.hold(run_id, owner):
            try:
                result = adapter.call(payload, ctx, mode)
            except RetryLater as exc:  # the provider said "later": the run waits in the queue, not here
                return deferral.defer(self, run, owner, adapter, ctx, payload, mode, exc)
            except LiveCallFailed as exc:
                result, error = None, {"type": "live_call_failed", "kind": exc.kind, "message": str(exc),
                                       "response": exc.response}
                if exc.kind == "ambiguous" and mode.live and adapter.has_side_effects:
                    # It may have happened at the provider: ending it "failed" would invite a
                    # second submission that does it twice.
                    error = finishing.reconcile_error(adapter, ctx, str(exc), kind=exc.kind, response=exc.response)
                if exc.adapter_fault and policy.auto_rollback:
                    rollback = f"{exc.kind}: {exc}"
            except AuroraError as exc:
                result, error = None, {"type": exc.code, "message": str(exc)}
            except Exception as exc:  # noqa: BLE001 - an adapter bug must fail the run, not loop it
                log.exception("adapter %s failed on run %s", adapter.name, run_id)
                result, error = None, {"type": "internal_error", "message": exc.__class__.__name__}
                if mode.live and adapter.has_side_effects:
                    error = finishing.reconcile_error(adapter, ctx, f"the live call broke off ({exc.__class__.__name__})"
                                                      " and may have been made", kind="internal_error")
            outcome = replace(finishing.finish(self, run, owner, adapter, ctx, payload, mode, result, error, rollback),
                              parent_id=run.parent_id)
        metrics.run_finished(run.goal, outcome.status, (utcnow() - run.created_at).total_seconds(), mode.name)
        log.info("run %s: %s", run_id, outcome.status, extra={"step": "finish", "status": outcome.status})
        return outcome

    def _plan_ahead(self, run_id: str, ctx: CallContext, fresh: Any = None) -> tuple[Any, pipeline.Plan] | None:
        """A fresh queued run's plan, worked out before the write transaction so that the time a
        worker holds the write lock is only the time it takes to write (the transaction uses the
        plan only if the run it claims is still that fresh run). ``fresh``: its row, known."""
        run = fresh if fresh is not None and fresh.id == run_id else None
        if run is None:
            with self.db.read_rows() as connection:
                run = connection.execute(run_sql.FRESH, {"rid": run_id}).one_or_none()
        if run is None:
            return None
        simulate = not self.settings.simulated_latency_ms
        return run, pipeline.plan(run, {}, ctx, ahead=True, simulate=simulate)

    def _claim(self, run_id: str, owner: str, ctx: CallContext,
               ahead: tuple[Any, pipeline.Plan] | None = None,
               ) -> tuple[Any, dict[str, Any], Mode, CallContext] | Outcome | None:
        """Take the lease, run route and gate, decide the mode and mark the act step begun, in one
        transaction; the call, simulated or live, is made after it commits (``_execute``)."""
        now = utcnow()
        with self.db.write() as session:
            conn = session.connection()
            # step is set to "act" now; a gate that stops the run below sets it back to "gate".
            run = conn.execute(run_sql.CLAIM, {"rid": run_id, "now": now, "owner": owner,
                                               "lease": float(self.settings.lease_seconds)}).one_or_none()
            if run is None:
                found = conn.execute(select(RUNS.c.status, RUNS.c.goal).where(RUNS.c.id == run_id)).one_or_none()
                if found is None:
                    return None
                if found.goal == flow_runs.FLOW_GOAL:  # a workflow's own run never acts: it advances
                    return Outcome(run_id, found.status, flow_runs.FLOW_GOAL)
                return Outcome(run_id, found.status, "not claimable")
            events.append(self.db, session, self.node, "run.running",
                          {"attempt": run.attempts, "worker": owner.rsplit(":", 1)[0]}, run_id=run_id, at=now)
            # The first claim ever (CLAIM sets started_at only then): nothing was recorded before.
            first = run.attempts == 1 and run.started_at == now
            if ahead is not None and first and run.document_hash == ahead[0].document_hash:
                steps: dict[str, Any] = {}
                plan = ahead[1]
            else:
                # Later attempts resume after what is done.
                steps = {} if first else {row.step: row for row in conn.execute(run_sql.STEPS_OF, {"rpk": run.pk})}
                plan = pipeline.plan(run, steps, ctx)
            payload, pending = plan.payload, plan.pending
            adapter = BY_GOAL[run.goal]
            earlier = steps.get("act")
            began = earlier is not None and earlier is not True and earlier.status == "started"
            if began:
                # An earlier attempt began the act, its gate open then: finish it, give it up or
                # make the call again, but never stop it at the gate after it may have happened.
                ended = self._resume(session, run, owner, adapter, ctx, payload, earlier.result or {}, steps, pending)
                if ended is not None:
                    return ended
            elif run.attempts > MAX_ATTEMPTS:
                return self._give_up(session, run, adapter, ctx, payload, None, steps, pending)
            if run.goal == "ingest_forms":
                cursor = session.get(FormCursor, adapter.form_id(payload, ctx))
                if cursor is not None and cursor.after:
                    payload["after"] = cursor.after
            ctx = replace(ctx, rollouts=adapter_state.Rollouts(session))
            adapter.carry((run.approval_binding or {}).get("facts") or {}, ctx)  # what the votes approved
            mode = plan.mode or adapter.decide(payload, ctx)
            # The votes must be for this very request and mode: rendered by the build the act uses.
            verdict = None if began or not plan.required else ledger.gate(
                self, session, run, plan.required, ctx.policy, now, ledger.bind(adapter, payload, ctx, mode))
            if verdict is not None:
                self._record_steps(session, run.pk, steps, pending)
                return verdict
            if pretends(run.goal, mode):  # approved, and would only be simulated: stop, and say so
                return stop_not_acted(self, session, run, adapter, mode, steps, pending)
            pending += [
                self._gate_open,
                {"step": "act", "status": "started", "result": {"mode": mode.name, "reason": mode.reason},
                 "attempt": run.attempts},
            ]
            self._record_steps(session, run.pk, steps, pending)
            # The call happens after this transaction: take the rollouts along, read.
            return run, payload, mode, replace(ctx, rollouts=dict(ctx.rollouts), grant=ActLease(self.db, owner))

    def _resume(self, session: Session, run: Any, owner: str, adapter: Any, ctx: CallContext,
                payload: dict[str, Any], act: dict[str, Any], steps: dict[str, Any],
                pending: list[dict[str, Any]]) -> Outcome | None:
        """A run whose act an earlier attempt began: finish it from the outcome that attempt kept,
        or give it up if the call may have happened and cannot be made again safely (or too
        often). None: make the call again (the provider deduplicates it, or it was simulated)."""
        live = act.get("mode") == "live"
        if "kept" in act:
            self._record_steps(session, run.pk, steps, pending)
            result, error, rollback = finishing.restore(adapter, act)
            mode = result.mode if result is not None else Mode(live, act.get("reason", ""))
            return finishing.finish_in(self, session, run, owner, adapter, ctx, payload, mode, result, error,
                                       rollback, None, owned=True)
        if (live and adapter.has_side_effects and not adapter.repeat_safe) or run.attempts > MAX_ATTEMPTS:
            return self._give_up(session, run, adapter, ctx, payload, act, steps, pending)
        return None

    def _give_up(self, session: Session, run: Any, adapter: Any, ctx: CallContext, payload: dict[str, Any],
                 act: dict[str, Any] | None, steps: dict[str, Any], pending: list[dict[str, Any]]) -> Outcome:
        self._record_steps(session, run.pk, steps, pending)
        return finishing.give_up(self, session, run, adapter, ctx, payload, act, MAX_ATTEMPTS)

    def _settle_fresh(self, run: Any, owner: str, plan: pipeline.Plan, policy: Policy) -> Outcome | None:
        """A fresh run planned ahead to a simulated outcome: claim and finish it in one statement,
        with its events, steps and audit record — and, for a step of a workflow, the workflow's
        advance (the next steps created in the same transaction: nothing is lost between the
        two, and it is one commit). None if it is no longer fresh (another worker, a cancel):
        the caller then takes the general path, which finds out what happened."""
        settlement, run_id, now = plan.simulated, run.id, utcnow()
        assert settlement is not None
        status = RunStatus.SUCCEEDED if settlement.ok else RunStatus.FAILED
        with self.db.write_rows() as connection:
            # The workflow's row first, as advancing and cancelling lock it: one order, no deadlock.
            parent = flow_runs.lock_parent(connection, run.parent_id) if run.parent_id else None
            # The compare-and-set takes the outbox locks in the same statement (one round trip).
            moved = self.db.change_then_lock(connection, run_sql.SETTLE_FRESH, {
                "rid": run_id, "now": now, "v_status": status.value, "v_result": settlement.body,
                "v_error": settlement.error}, *OUTBOX_LOCKS)
            if not moved:
                return None
            record = audit.chain(self.db, connection, settlement.record)  # the last read before the commit
            final = {"mode": record["mode"], "audit": record["pk"]} if settlement.ok else {"error": settlement.error}
            settled: list[tuple[str, dict[str, Any]]] = [
                ("run.running", {"attempt": 1, "worker": owner.rsplit(":", 1)[0]}), (f"run.{status.value}", final)]
            fresh: list[Any] = []
            sent: list[Any] = []
            # What is left reads nothing back: on PostgreSQL its INSERTs (and, for a run outside a
            # workflow, the COMMIT) are one round trip. A workflow's advance reads: after it.
            with self.db.batch(connection, commit=parent is None):
                audit.insert(connection, record)
                self._record_steps(connection, run.pk, {},
                                   [*plan.pending, self._gate_open, finishing.act_done(record, status, 1)])
                if parent is None:
                    events.append_many(self.db, connection, self.node, settled, run_id=run_id, at=now)
            if parent is not None:  # its events and its workflow's in one statement
                sent = flow_runs.advance_in(self, connection, parent, policy, fresh,
                                            [(type_, data, run_id) for type_, data in settled], now)
                for type_, _data in settled:
                    changes.note(run_id, type_)
        # parent None: whatever its workflow had to do next is done (``sent``)
        return Outcome(run_id, status.value, "simulated", run.goal, run.created_at, "simulated",
                       follow_up=tuple(sent), parent_id=None, fresh=tuple(fresh))

    #: the gate step of a run that needs no approval
    _gate_open = {"step": "gate", "status": "done", "result": {"state": "open"}}

    @staticmethod
    def _record_steps(session: Session | Connection, run_pk: int, steps: dict[str, Any], records: list[dict[str, Any]]) -> None:
        """Insert new steps of the run ``run_pk`` in one statement; update those an earlier attempt left behind."""
        now = utcnow()
        conn = connection_of(session)
        new = []
        for record in records:
            values = {"attempt": 1, "result": None, **record, "finished_at": now if record["status"] == "done" else None}
            if record["step"] in steps:
                conn.execute(run_sql.UPDATE_STEP, {"rpk": run_pk, "sname": record["step"],
                                                   **{f"v_{k}": v for k, v in values.items() if k != "step"}})
            else:
                new.append({"run_pk": run_pk, "started_at": now, **values})
            steps[record["step"]] = True
        if new:
            conn.execute(run_sql.INSERT_STEPS, new)

    @cached_property
    def leases(self) -> LeaseKeeper:
        return LeaseKeeper(self.db, self.settings.lease_seconds)

    # -- scheduled work ----------------------------------------------------------------------

    def schedule_form_ingests(self) -> list[str]:
        """Start an ingest run per configured form, when the policy allows automatic ingest and
        no ingest of that form is still queued or running. Return the new run ids."""
        policy = self.policies.current()
        if not policy.data.get("allow_typeform_auto_ingest"):
            return []
        forms = list(policy.adapter("typeform").get("forms") or [])
        configured = None if forms else self.secrets().get("typeform", "form_id")
        if configured:
            forms = [configured]
        from .documents import load

        started = []
        with self.db.read() as session:
            busy = {row.document["payload"].get("form_id") for row in session.scalars(select(Run).where(
                Run.goal == "ingest_forms", Run.status.in_(["queued", "running"])))}
        for form_id in forms:
            if form_id in busy:
                continue
            workflow = load(json.dumps({"name": f"typeform_ingest_{form_id}", "category": "forms", "origin": "beat",
                                        "goal": "ingest_forms", "payload": {"form_id": form_id}}), fmt="json")
            started.append(self.submit(workflow, "beat").id)
        return started

    # -- sweeping ----------------------------------------------------------------------------

    def sweep(self, waiting: int | None = None) -> list[str]:
        """Reclaim lapsed leases, resend lost messages, expire overdue gates (``aurora.sweeper``)."""
        return sweeper.sweep(self, waiting)

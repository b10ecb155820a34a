"""Running a workflow of several steps: a parent run, and one ordinary run per step.

Every step is a run like any other — route, gate, act, leases, compare-and-set, exactly-once
live effects, audit — created as a child of the workflow's run when its needs have succeeded,
with its payload rendered from the inputs and the earlier outputs and validated again. The
workflow's own run never acts: it is ``running`` from its submission until every step ended, and
*advancing* it (:func:`advance`) is what creates the steps that are ready. A step's worker advances
the workflow the moment the step ends (``Engine.execute`` hands the parent on); the sweeper also
advances every running workflow, so a worker killed between the two loses nothing.

Advancing locks the workflow's row (``SELECT … FOR UPDATE``; SQLite has one writer anyway) and
each step attempt is unique (``ux_runs_parent_step``): two workers finishing two parallel steps at
once create the next step once. Steps that ended are never run again; a rerun
(:func:`rerun`) reuses what succeeded and refuses to repeat a step that acted live.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import replace
from datetime import timedelta
from functools import lru_cache
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session

from . import changes, documents, events, flows, run_results
from .db import connection_of
from .errors import ConfigError, Conflict, DocumentError, NotFound
from .models import FINAL_STATUSES, Run, RunStatus, utcnow
from .run_sql import INSERT_RUN, NOW, RUNS
from .templating import TemplateProblem, budget, evaluate

if TYPE_CHECKING:
    from .engine import Engine, Outcome

log = logging.getLogger(__name__)
FLOW_GOAL = flows.FLOW_GOAL
#: statuses of a step that let the steps needing it run
_GOOD = {RunStatus.SUCCEEDED.value}
#: the most workflows one sweep advances (among those with a step that ended unrecorded)
SWEEP_BATCH = 200
#: ``Outcome.parent_id`` of a path that did not read the run's row
PARENT_UNREAD = "?"
_FINAL = frozenset(status.value for status in FINAL_STATUSES)


def new_flow_values(workflow: documents.Workflow, submitter: str, person: str | None) -> dict[str, Any]:
    """The row of a workflow's own run: running from the start (it never waits in the queue)."""
    now = utcnow()
    return {
        "id": str(uuid.uuid4()), "name": workflow.name, "goal": FLOW_GOAL, "document": workflow.document,
        "document_hash": workflow.digest, "status": RunStatus.RUNNING.value, "submitted_by": submitter,
        "submitted_by_person": person or submitter, "inputs": workflow.inputs or {}, "approvals_required": 0,
        "attempts": 0, "created_at": now, "updated_at": now, "enqueued_at": now, "started_at": now,
        "result": {"mode": None, "steps": {}},
    }


def begin(engine: Engine, connection: Any, values: dict[str, Any], policy: Any) -> None:
    """Create a workflow's first steps in the transaction that stores it (the submitter then
    sends them: :func:`ready_steps`), so that a workflow starts as fast as a single run.
    ``policy``: read before the transaction (reading it may write its reload to the audit chain)."""
    _advance(engine, connection, SimpleNamespace(**values), policy)


def ready_steps(engine: Engine, parent_id: str) -> list[str]:
    """The steps of a workflow waiting for their first message (those :func:`begin` created)."""
    with engine.db.read_rows() as connection:
        # not a retry waiting out its backoff (its not-before time is in the future)
        return list(connection.execute(select(RUNS.c.id).where(
            RUNS.c.parent_id == parent_id, RUNS.c.status == RunStatus.QUEUED.value, RUNS.c.attempts == 0,
            or_(RUNS.c.enqueued_at.is_(None), RUNS.c.enqueued_at <= utcnow()))).scalars())


def follow_up(engine: Engine, outcome: Outcome) -> Outcome:
    """A workflow of several steps moves on the moment a step ends: executing a workflow's run
    advances it, and so does a step that ended, here, in the step's worker; the steps that
    became ready are the outcome's ``follow_up``, for the caller to send on."""
    if outcome.detail == FLOW_GOAL:
        # and the steps its submission created, if whoever submitted it sent only the workflow
        sent = advance(engine, outcome.run_id)
        waiting = [(rid, None) for rid in ready_steps(engine, outcome.run_id) if rid not in dict(sent)]
        return replace(outcome, follow_up=tuple(sent + waiting))
    if outcome.status in _FINAL and outcome.detail != "not claimable":
        parent = outcome.parent_id
        if parent == PARENT_UNREAD:  # a path that did not read the run's row: ask (the hot paths read it)
            with engine.db.read_rows() as connection:
                parent = connection.execute(select(RUNS.c.parent_id).where(RUNS.c.id == outcome.run_id)).scalar()
        if parent:
            return replace(outcome, follow_up=tuple(advance(engine, parent)))
    return outcome


def advance_all(engine: Engine) -> list[tuple[str, float | None]]:
    """Advance every running workflow (the sweeper's safety net for a step whose worker died
    before it handed its workflow on)."""
    with engine.db.read() as session:
        parents = running_flows(session)
    return [sent for parent in parents for sent in advance(engine, parent)]


def advance(engine: Engine, parent_id: str) -> list[tuple[str, float | None]]:
    """Create the steps that are ready, skip those that cannot run, end the workflow when every
    step ended. Returns the new step runs to send to the workers, each with its delay (a retry's
    backoff). Safe to call any number of times, concurrently."""
    try:
        # Read before the transaction, as begin's caller does: a reload is recorded in the audit
        # chain by a write of its own, which would wait for the writers' lock this thread holds.
        policy = engine.policies.current()
    except ConfigError as exc:
        # No usable policy (a step's ceiling needs it): the workflow waits, as a blocked run does,
        # and the sweeper advances it once the policy is fixed.
        log.warning("workflow %s: not advanced, %s", parent_id, exc)
        return []
    with engine.db.write_rows() as connection:
        # The workflow's row locked first: whoever advances it next waits here (SQLite: one writer).
        return advance_in(engine, connection, lock_parent(connection, parent_id), policy)


def lock_parent(connection: Any, parent_id: str) -> Any:
    """A workflow's row, locked until the transaction ends (SQLite: its writer holds all)."""
    return connection.execute(_PARENT, {"rid": parent_id}).one_or_none()


def advance_in(engine: Engine, connection: Any, parent: Any, policy: Any, fresh: list[Any] | None = None,
               settled: list[tuple[str, dict[str, Any], str | None]] | None = None,
               now: Any = None) -> list[tuple[str, float | None]]:
    """:func:`advance` in the caller's transaction, which locked ``parent`` (:func:`lock_parent`)
    before it changed the step: a step settled fresh hands its workflow on in its own commit.
    ``fresh`` gets the rows of the steps it created to be sent now, as ``run_sql.FRESH`` reads
    them: the worker that runs one of them next need not read it back (``Engine.execute``).
    ``settled``: the caller's events (type, data, run id), written first in the same statement
    as the workflow's, at ``now``, the caller's time."""
    if parent is None or parent.goal != FLOW_GOAL or parent.status != RunStatus.RUNNING.value:
        events.append_batch(engine.db, connection, engine.node, settled or [], at=now)
        return []
    return _advance(engine, connection, parent, policy, fresh, settled, now)


_COLUMNS = ("id", "name", "goal", "status", "document", "document_hash", "inputs", "result", "error",
            "submitted_by", "submitted_by_person", "step_id", "step_attempt", "approval_binding", "approvals_required")
_PARENT = select(*(RUNS.c[name] for name in _COLUMNS)).where(RUNS.c.id == bindparam("rid")).with_for_update()
#: a workflow's steps so far, on its own row (built once: building a statement costs more than running it)
_PROGRESS = update(RUNS).where(RUNS.c.id == bindparam("rid")).values(result=bindparam("v_result"), updated_at=NOW)
_CHILDREN = select(*(RUNS.c[name] for name in _COLUMNS)).where(
    RUNS.c.parent_id == bindparam("pid")).order_by(RUNS.c.step_attempt)


@lru_cache(maxsize=256)
def _plan(document_hash: str, document_json: str) -> tuple[list[flows.Step], dict[str, flows.Step], list[str]]:
    """A workflow's steps, by id, and an order that puts every step after its needs (per document)."""
    steps = flows.steps_of(json.loads(document_json))
    return steps, {step.id: step for step in steps}, flows.order(steps)


def _advance(engine: Engine, session: Session, parent: Any, policy: Any, fresh: list[Any] | None = None,
             settled: list[tuple[str, dict[str, Any], str | None]] | None = None,
             now: Any = None) -> list[tuple[str, float | None]]:
    steps, by_id, ordered = _plan(parent.document_hash, json.dumps(parent.document, sort_keys=True))
    latest = _latest_children(session, parent.id)
    send: list[tuple[str, float | None]] = []
    now = now or utcnow()
    outbox = list(settled or [])  # the events, written in one statement
    changed = True
    while changed:  # a skip can make the steps after it skippable: go round until nothing moves
        changed = False
        for sid in ordered:
            step, child = by_id[sid], latest.get(sid)
            if child is None:
                needs = [latest.get(n) for n in step.needs]
                if any(n is None or not RunStatus(n.status).final for n in needs):
                    continue
                seen = {sid: latest[sid] for sid in flows.ancestors(by_id, step.id) if sid in latest}  # what it may read
                child = _start_step(engine, session, parent, step, seen, needs, now, outbox, policy)
                latest[sid] = child
                if child.status == RunStatus.QUEUED.value:
                    send.append((child.id, None))
                    if fresh is not None:
                        fresh.append(child)
                changed = True
            elif _retry_due(step, child):
                delay = step.backoff * (2 ** (child.step_attempt - 1)) if step.backoff else 0.0
                again = documents.Workflow(document=child.document, digest=child.document_hash)
                child = _insert_step(engine, session, parent, step, again, child.step_attempt + 1,
                                     now, delay, {"retry_of": child.id}, outbox)
                latest[sid] = child
                send.append((child.id, delay or None))
                changed = True
    _record_progress(engine, session, parent, latest, steps, now, outbox)
    return send


def _latest_children(session: Session, parent_id: str) -> dict[str, Any]:
    """Each step's latest attempt, by step id."""
    return {child.step_id: child for child in connection_of(session).execute(_CHILDREN, {"pid": parent_id})}


def _retry_due(step: flows.Step, child: Run) -> bool:
    # Only a plain failure is tried again: a rejection, an expired gate, a call that may have
    # happened (needs_reconciliation) or would only be simulated (not_acted) is not a fault a
    # second try fixes, and a live effect must never be repeated.
    return child.status == RunStatus.FAILED.value and (child.step_attempt or 1) < step.attempts \
        and (child.error or {}).get("type") not in ("invalid_step", "template_error", "lost_too_often")


def _start_step(engine: Engine, session: Session, parent: Any, step: flows.Step, latest: dict[str, Any],
                needs: list[Any], now: Any, outbox: list[Any], policy: Any) -> Any:
    bad = [(n.step_id, n.status) for n in needs if n is not None and n.status not in _GOOD]
    if bad:
        names = ", ".join(f"{sid} ({status})" for sid, status in bad)
        return _insert_final(engine, session, parent, step, now, outbox, RunStatus.SKIPPED,
                             {"type": "skipped", "message": f"a step it needs did not succeed: {names}"})
    with budget():  # the step's condition and payload share one allowance of template work
        return _render_step(engine, session, parent, step, latest, now, outbox, policy)


def _render_step(engine: Engine, session: Session, parent: Any, step: flows.Step, latest: dict[str, Any],
                 now: Any, outbox: list[Any], policy: Any) -> Any:
    ctx = flows.context(parent.inputs or {}, _outputs(session, latest))
    try:
        if step.condition and not evaluate(step.condition, ctx):
            return _insert_final(engine, session, parent, step, now, outbox, RunStatus.SKIPPED,
                                 {"type": "condition_false", "message": f"if: {step.condition} was false"})
    except TemplateProblem as exc:
        return _insert_final(engine, session, parent, step, now, outbox, RunStatus.FAILED,
                             {"type": "template_error", "message": f"if: {exc}"})
    where = f"steps[{step.index}].payload"
    payload, problems = flows.render_payload(step.payload, ctx, where)
    workflow = None
    if not problems:
        try:
            workflow = documents.validate(flows.task_document(parent.name, step, payload))
            # the charge ceiling too: an amount that only a template made known is checked now
            documents.refuse_over_ceiling(workflow, policy)
        except DocumentError as exc:
            problems = [type(p)(f"{where}{p.path[len('payload'):]}", p.message) for p in exc.problems]
    if problems or workflow is None:
        return _insert_final(engine, session, parent, step, now, outbox, RunStatus.FAILED, {
            "type": "invalid_step", "message": "the step's payload, rendered, is not valid: "
            + "; ".join(str(p) for p in problems), "problems": [p.as_dict() for p in problems]})
    return _insert_step(engine, session, parent, step, workflow, 1, now, 0.0, {}, outbox)


def _outputs(session: Session, latest: dict[str, Run]) -> dict[str, dict[str, Any]]:
    results = run_results.full_many(session, [(c.id, c.result) for c in latest.values() if c.status in _GOOD])
    return {sid: {"status": child.status,
                  "output": flows.output_of(child.goal, results[child.id]) if child.status in _GOOD else {}}
            for sid, child in latest.items()}


def _insert_step(engine: Engine, session: Session, parent: Any, step: flows.Step, workflow: documents.Workflow,
                 attempt: int, now: Any, delay: float, note: dict[str, Any], outbox: list[Any]) -> Any:
    values = {
        "id": str(uuid.uuid4()), "name": workflow.name, "goal": workflow.goal, "document": workflow.document,
        "document_hash": workflow.digest, "status": RunStatus.QUEUED.value, "submitted_by": parent.submitted_by,
        "submitted_by_person": parent.submitted_by_person, "approvals_required": 0, "attempts": 0,
        "created_at": now, "updated_at": now, "enqueued_at": now + timedelta(seconds=delay),
        "parent_id": parent.id, "step_id": step.id, "step_attempt": attempt,
        # a step's timeout bounds its wait for approvals (the gate expires it then)
        "gate_deadline": now + timedelta(seconds=step.timeout) if step.timeout else None,
    }
    pk = connection_of(session).execute(INSERT_RUN, values).inserted_primary_key[0]
    outbox.append(("run.queued", {"name": workflow.name, "goal": workflow.goal, "submitted_by": parent.submitted_by,
                                  "workflow": parent.id, "step": step.id, "attempt": attempt, **note}, values["id"]))
    outbox.append(("step.started", {"step": step.id, "goal": step.goal, "run": values["id"], "attempt": attempt,
                                    **note}, parent.id))
    return _row({**values, "pk": pk})


def _insert_final(engine: Engine, session: Session, parent: Any, step: flows.Step, now: Any, outbox: list[Any],
                  status: RunStatus, error: dict[str, Any]) -> Any:
    """A step that never runs: skipped, or failed before it could start (its payload)."""
    values = {
        "id": str(uuid.uuid4()), "name": f"{parent.name}.{step.id}"[:128], "goal": step.goal,
        "document": {"name": f"{parent.name}.{step.id}"[:128], "goal": step.goal, "payload": step.payload},
        "document_hash": "", "status": status.value, "submitted_by": parent.submitted_by,
        "submitted_by_person": parent.submitted_by_person, "approvals_required": 0, "attempts": 0,
        "created_at": now, "updated_at": now, "finished_at": now, "parent_id": parent.id, "step_id": step.id,
        "step_attempt": 1, "error": error,
    }
    connection_of(session).execute(INSERT_RUN, values)
    outbox.append((f"run.{status.value}", {"reason": error["message"]}, values["id"]))
    return _row(values)


def _row(values: dict[str, Any]) -> Any:
    """A step run just inserted, as advancing reads it (what the insert wrote, nothing read back)."""
    return SimpleNamespace(**{"result": None, "error": None, "approval_binding": None, **values})


def _record_progress(engine: Engine, session: Session, parent: Any, latest: dict[str, Any],
                     steps: list[flows.Step], now: Any, outbox: list[Any]) -> None:
    """Announce each step's new status on the workflow's timeline; end the workflow when all ended."""
    before = (parent.result or {}).get("steps", {})
    snapshot: dict[str, Any] = {}
    for step in steps:
        child = latest.get(step.id)
        if child is None:
            snapshot[step.id] = {"status": "waiting"}
            continue
        snapshot[step.id] = {"status": child.status, "run": child.id, "attempt": child.step_attempt,
                             "mode": (child.result or {}).get("mode")}
        if child.status != (before.get(step.id) or {}).get("status") and RunStatus(child.status).final:
            detail = (child.error or {}).get("message")
            outbox.append((f"step.{child.status}", {"step": step.id, "run": child.id,
                                                    **({"reason": detail[:500]} if detail else {})}, parent.id))
    modes = {value.get("mode") for value in snapshot.values()}
    result = {**(parent.result or {}), "steps": snapshot,
              "mode": "live" if "live" in modes else ("simulated" if "simulated" in modes else None)}
    ended = all(s["status"] != "waiting" and RunStatus(s["status"]).final for s in snapshot.values()) \
        and not any(_retry_due(step, latest[step.id]) for step in steps)
    if not ended:
        if result != parent.result:
            connection_of(session).execute(_PROGRESS, {"rid": parent.id, "v_result": result, "now": now})
        events.append_batch(engine.db, session, engine.node, outbox, at=now)
        return
    status, error = _verdict(latest, steps)
    result["reason"] = _reason(snapshot)
    ending = {"steps": {sid: s["status"] for sid, s in snapshot.items()}, **({"error": error} if error else {})}
    if engine.transition(session, parent.id, (RunStatus.RUNNING,), status, announce=False, result=result, error=error):
        outbox.append((f"run.{status.value}", ending, parent.id))  # last, in the same statement
        changes.note(parent.id, f"run.{status.value}")  # a submitter waiting for the workflow hears it
    events.append_batch(engine.db, session, engine.node, outbox, at=now)


def _verdict(latest: dict[str, Run], steps: list[flows.Step]) -> tuple[RunStatus, dict[str, Any] | None]:
    for wanted in (RunStatus.NEEDS_RECONCILIATION, RunStatus.FAILED, RunStatus.REJECTED, RunStatus.EXPIRED,
                   RunStatus.NOT_ACTED, RunStatus.CANCELLED):
        for step in steps:
            child = latest[step.id]
            if child.status == wanted.value:
                message = f"step {step.id} ended {child.status}"
                if (child.error or {}).get("message"):
                    message += f": {child.error['message']}"
                status = RunStatus.NEEDS_RECONCILIATION if wanted is RunStatus.NEEDS_RECONCILIATION else (
                    RunStatus.CANCELLED if wanted is RunStatus.CANCELLED else RunStatus.FAILED)
                return status, {"type": f"step_{child.status}", "step": step.id, "run": child.id,
                                "message": message[:2000]}
    return RunStatus.SUCCEEDED, None


def _reason(snapshot: dict[str, Any]) -> str:
    modes = [f"{sid}: {s.get('mode') or s['status']}" for sid, s in snapshot.items()]
    return "steps " + ", ".join(modes)


# -- cancel, sweep, rerun -----------------------------------------------------------------------

def cancel_steps(engine: Engine, session: Session, parent_id: str, by: str) -> None:
    """A cancelled workflow cancels every step that has not begun its action."""
    from .engine import CANCELLABLE

    for child_id in session.scalars(select(Run.id).where(
            Run.parent_id == parent_id, Run.status.in_([s.value for s in CANCELLABLE]))):
        engine.transition(session, child_id, CANCELLABLE, RunStatus.CANCELLED, {"by": by, "reason": "workflow cancelled"},
                          where="not_acting")


def running_flows(session: Session) -> list[str]:
    """The running workflows that advancing would move: a step ended (or was retried) since the
    workflow last recorded its steps, or it has no step yet. Found in reads, among all running
    workflows: taking the oldest few would leave the rest, behind a long wait for votes, forever."""
    parents = RUNS.alias("parents")
    rows = session.execute(
        select(RUNS.c.parent_id, RUNS.c.step_id, RUNS.c.step_attempt, RUNS.c.status)
        .join(parents, parents.c.id == RUNS.c.parent_id)
        .where(parents.c.goal == FLOW_GOAL, parents.c.status == RunStatus.RUNNING.value))
    latest: dict[str, dict[str, tuple[int, str]]] = {}
    for row in rows:
        steps = latest.setdefault(row.parent_id, {})
        if row.step_id not in steps or (row.step_attempt or 1) > steps[row.step_id][0]:
            steps[row.step_id] = (row.step_attempt or 1, row.status)
    due: list[str] = []
    for parent_id, result in session.execute(select(Run.id, Run.result).where(
            Run.goal == FLOW_GOAL, Run.status == RunStatus.RUNNING.value).order_by(Run.pk)):
        recorded = (result or {}).get("steps", {})
        steps = latest.get(parent_id, {})
        if not steps or any((recorded.get(sid) or {}).get("status") != status
                            or (recorded.get(sid) or {}).get("attempt") != attempt
                            for sid, (attempt, status) in steps.items()):
            due.append(parent_id)
            if len(due) >= SWEEP_BATCH:
                break
    return due


def rerun(engine: Engine, run_id: str, submitter: str, person: str | None, from_step: str | None = None) -> Run:
    """A new run of a workflow that reuses the steps that succeeded (never repeating a live effect)
    and runs the rest: from ``from_step`` (and every step after it), or from what did not succeed."""
    with engine.db.read() as session:
        old = session.scalar(select(Run).where(Run.id == run_id))
        if old is None:
            raise NotFound(f"no run {run_id}")
        if old.goal != FLOW_GOAL:
            raise Conflict("only a workflow of several steps can be rerun from a step; submit a task again instead")
        if not RunStatus(old.status).final:
            raise Conflict(f"the workflow is still {old.status}; rerun it once it ended")
        latest = {child.step_id: child for child in session.scalars(
            select(Run).where(Run.parent_id == run_id).order_by(Run.step_attempt))}
    steps = flows.steps_of(old.document)
    by_id = {step.id: step for step in steps}
    if from_step is not None and from_step not in by_id:
        raise NotFound(f"the workflow has no step {from_step!r} (its steps: {', '.join(by_id)})")
    again = {sid for sid in by_id if from_step is not None and (sid == from_step or from_step in flows.ancestors(by_id, sid))}
    for sid, child in latest.items():
        # A cancelled workflow keeps a step that had begun acting: it is still at it
        if not RunStatus(child.status).final:
            raise Conflict(f"step {sid} is still {child.status} in run {run_id} (it may be acting): "
                           "rerun once it ended")
    reuse = {sid: child for sid, child in latest.items() if child.status in _GOOD and sid not in again}
    for sid, child in latest.items():
        if sid in reuse:
            continue
        if child.status in _GOOD and (child.result or {}).get("mode") == "live":
            raise Conflict(f"step {sid} acted live in run {run_id}: running it again would repeat that; "
                           "rerun from a later step, or submit a new workflow if it must happen twice")
        if child.status == RunStatus.NEEDS_RECONCILIATION.value:
            # its live call may have happened at the provider; a new step run has a new
            # idempotency key, so the provider would not recognise a second call
            raise Conflict(f"step {sid} may have acted live in run {run_id} (needs reconciliation): running "
                           "it again could repeat that; find out at the provider, then submit a new workflow")
    workflow = documents.Workflow(document=old.document, digest=old.document_hash, inputs=old.inputs or {})
    now = utcnow()
    with engine.db.write() as session:
        values = new_flow_values(workflow, submitter, person)
        connection_of(session).execute(INSERT_RUN, values)
        events.append(engine.db, session, engine.node, "run.queued",
                      {"name": workflow.name, "goal": FLOW_GOAL, "submitted_by": submitter, "rerun_of": run_id,
                       "from_step": from_step, "reused": sorted(reuse)}, run_id=values["id"], at=now)
        for child in reuse.values():
            copy = {c.name: getattr(child, c.name) for c in Run.__table__.columns if c.name not in ("pk",)}
            copy.update(id=str(uuid.uuid4()), parent_id=values["id"], step_attempt=1, created_at=now, updated_at=now,
                        # whole: the copy has no audit record of its own to take the request from
                        result={**(run_results.full(session, child.id, child.result) or {}), "reused_from": child.id},
                        lease_owner=None,
                        lease_expires_at=None)
            connection_of(session).execute(INSERT_RUN, copy)
            events.append(engine.db, session, engine.node, "run.succeeded",
                          {"reused_from": child.id, "reason": f"reused from run {run_id}: not done again"},
                          run_id=copy["id"], at=now)
        session.flush()
        return session.scalar(select(Run).where(Run.id == values["id"]))


def steps_view(session: Session, run: Run) -> list[dict[str, Any]]:
    """The steps of a workflow as ``GET /workflows/<id>`` shows them."""
    latest = _latest_children(session, run.id)
    results = run_results.full_many(session, [(c.id, c.result) for c in latest.values() if c.status in _GOOD])
    out = []
    for step in flows.steps_of(run.document):
        child = latest.get(step.id)
        item: dict[str, Any] = {"id": step.id, "goal": step.goal, "needs": list(step.needs),
                                "status": child.status if child else "waiting"}
        if step.condition:
            item["if"] = step.condition
        if child is not None:
            result = child.result or {}
            item.update(run=child.id, attempt=child.step_attempt, mode=result.get("mode"),
                        reason=result.get("reason") or (child.error or {}).get("message"))
            if child.status in _GOOD:
                item["output"] = flows.output_of(child.goal, results[child.id])
            if child.status == RunStatus.AWAITING_APPROVAL.value:
                item["approval"] = (child.approval_binding or {}).get("summary") or "waits for approvals"
                item["approvals_required"] = child.approvals_required
        out.append(item)
    return out

"""Finishing a run after its act: the outcome, its audit record and the final status, once.

A live call's outcome is known only to the process that made it, until it is written. So:

- The finish is tried again, with backoff, for about a lease while the lease keeper renews the
  lease: a database that is locked or unreachable for a few seconds does not lose an outcome, and
  the call is never made again for it.
- A finish checks that this worker still holds the lease *before* it writes anything, and writes
  the audit record only with the status change that finishes the run, in one transaction: a
  worker that lost its lease writes no second record of a call another worker also finishes.
- What a side-effecting call returned is kept on its act step (``result.kept``) when the finish
  cannot be written, or when the lease was lost: the next attempt finishes the run from it
  instead of calling again.
- A live call that may have reached its provider and whose outcome is unknown ends the run as
  ``needs_reconciliation``, with the idempotency key and any provider ids, never as ``failed``.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

from . import adapter_state, audit, events, pipeline, run_sql
from .adapters import CallContext, Mode
from .adapters.base import AdapterResult
from .db import connection_of
from .models import RunStatus

log = logging.getLogger(__name__)

#: what a failed finish transaction may raise that is worth trying again (locked, unreachable)
RETRYABLE = (OperationalError, InterfaceError)
#: first and longest wait between finish attempts (seconds)
FIRST_DELAY, MAX_DELAY = 0.1, 2.0
#: the error type of a run whose action may have happened at the provider
RECONCILE = "needs_reconciliation"


def act_done(record: dict[str, Any], status: RunStatus, attempt: int) -> dict[str, Any]:
    return {"step": "act", "status": "done", "attempt": attempt,
            "result": {"audit": record["pk"], "ok": status is RunStatus.SUCCEEDED, "mode": record["mode"]}}


def final_status(settlement: pipeline.Settlement) -> RunStatus:
    if settlement.ok:
        return RunStatus.SUCCEEDED
    if (settlement.error or {}).get("type") == RECONCILE:
        return RunStatus.NEEDS_RECONCILIATION
    return RunStatus.FAILED


def reconcile_error(adapter: Any, ctx: CallContext, message: str, **details: Any) -> dict[str, Any]:
    """The error of a run whose live call may have reached the provider: what a person needs to
    look it up there (the idempotency key Aurora sent, any ids the provider gave)."""
    return {"type": RECONCILE, "adapter": adapter.name, "message": message,
            "idempotency_key": ctx.idempotency_key(adapter.name, adapter.operation),
            **{k: v for k, v in details.items() if v is not None}}


def give_up(engine: Any, session: Any, run: Any, adapter: Any, ctx: CallContext, payload: dict[str, Any],
            act: dict[str, Any] | None, max_attempts: int) -> Any:
    """End a run that is not acted on again: ``needs_reconciliation`` when a live call with side
    effects may have reached the provider (with one audit record of that call, outcome
    ``unknown``: the log shows every call that may have happened), else ``failed``."""
    from .engine import Outcome

    too_often = run.attempts > max_attempts
    if act is None or act.get("mode") != "live" or not adapter.has_side_effects:
        error = {"type": "too_many_attempts", "message": f"gave up after {max_attempts} attempts"}
        engine.transition(session, run.id, (RunStatus.RUNNING,), RunStatus.FAILED,
                          {"error": error["type"], "adapter": adapter.name}, error=error)
        return Outcome(run.id, RunStatus.FAILED.value, "too many attempts")
    why = "it was begun too often without finishing" if too_often else "this provider cannot deduplicate a repeat"
    error = reconcile_error(adapter, ctx, f"a live {adapter.name} call was interrupted and may have been made "
                            f"({why}); check with the provider before submitting again",
                            reason="too_many_attempts" if too_often else "interrupted")
    try:
        request = ctx.secrets.redact(adapter.build(payload, ctx))
    except Exception:  # noqa: BLE001 - the record matters more than the request's exact shape
        request = ctx.secrets.redact({"payload": payload})
    record = audit.append(engine.db, session, audit.prepare(
        run_id=run.id, adapter=adapter.name, operation=adapter.operation, mode="live",
        reason=f"interrupted: {act.get('reason', '')}"[:255], request=request, outcome="unknown",
        response={"error": error}, duration_ms=0.0))
    engine.transition(session, run.id, (RunStatus.RUNNING,), RunStatus.NEEDS_RECONCILIATION,
                      {"error": RECONCILE, "adapter": adapter.name, "audit": record["pk"]}, error=error)
    return Outcome(run.id, RunStatus.NEEDS_RECONCILIATION.value, error["reason"].replace("_", " "))


# -- keeping an outcome on the act step --------------------------------------------------------

def kept_outcome(mode: Mode, result: AdapterResult | None, error: dict[str, Any] | None,
                 rollback: str | None, ctx: CallContext) -> dict[str, Any]:
    """The act step's result with the call's outcome, redacted, for the next attempt."""
    outcome = None
    if result is not None:
        outcome = {"msg": result.msg, "request": result.request, "response": result.response, "ok": result.ok,
                   "duration_ms": result.duration_ms, "extra": result.extra,
                   "mode": {"live": result.mode.live, "reason": result.mode.reason}}
    return {"mode": mode.name, "reason": mode.reason,
            "kept": ctx.secrets.redact({"result": outcome, "error": error, "rollback": rollback})}


def keep(session: Any, run_pk: int, step_result: dict[str, Any]) -> None:
    connection_of(session).execute(run_sql.KEEP_OUTCOME, {"rpk": run_pk, "v_result": step_result})


def restore(adapter: Any, step_result: dict[str, Any]) -> tuple[AdapterResult | None, dict[str, Any] | None, str | None]:
    kept = step_result["kept"]
    data = kept.get("result")
    result = None
    if data is not None:
        result = AdapterResult(adapter.name, adapter.operation, Mode(data["mode"]["live"], data["mode"]["reason"]),
                               data["msg"], data["request"], data.get("response"), data["ok"],
                               data.get("duration_ms", 0.0), data.get("extra") or {})
    return result, kept.get("error"), kept.get("rollback")


# -- finishing ---------------------------------------------------------------------------------

def finish(engine: Any, run: Any, owner: str, adapter: Any, ctx: CallContext, payload: dict[str, Any], mode: Mode,
           result: AdapterResult | None, error: dict[str, Any] | None, rollback: str | None) -> Any:
    """Write a call's outcome, trying again for about a lease (the caller holds the lease)."""
    from .engine import Outcome

    rollback = ctx.secrets.redact(rollback) if rollback else None
    kept = kept_outcome(mode, result, error, rollback, ctx) if mode.live and adapter.has_side_effects else None
    deadline = time.monotonic() + engine.settings.lease_seconds
    delay = FIRST_DELAY
    while True:
        try:
            with engine.db.write() as session:
                # persist() may trim the response it stores: each try starts from the call's own result
                return finish_in(engine, session, run, owner, adapter, ctx, payload, mode, copy.deepcopy(result),
                                 error, rollback, kept)
        except RETRYABLE as exc:
            if time.monotonic() + delay >= deadline:
                log.error("run %s: could not write its outcome for %d s (%s)", run.id,
                          engine.settings.lease_seconds, exc.__class__.__name__)
                break
            log.warning("run %s: could not write its outcome (%s); trying again in %.1f s", run.id,
                        exc.__class__.__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
    if kept is not None:
        try:
            with engine.db.write_rows() as connection:
                keep(connection, run.pk, kept)
        except RETRYABLE:
            log.error("run %s: could not keep its outcome either; the next attempt reconciles it", run.id)
    return Outcome(run.id, "unfinished", "the outcome could not be written yet; the next attempt finishes it")


def finish_in(engine: Any, session: Any, run: Any, owner: str, adapter: Any, ctx: CallContext,
              payload: dict[str, Any], mode: Mode, result: AdapterResult | None, error: dict[str, Any] | None,
              rollback: str | None, kept: dict[str, Any] | None, owned: bool = False) -> Any:
    """Persist what the call left at the provider, then :func:`settle_in`, in the caller's
    transaction; ``owned`` when this transaction claimed the run itself."""
    from .engine import Outcome

    conn = connection_of(session)
    if not owned and not conn.execute(run_sql.STILL_OWNED, {"rid": run.id, "owner": owner}).rowcount:
        # Another worker has the run now: write nothing of this call but the outcome it may need.
        if kept is not None:
            keep(session, run.pk, kept)
        events.append(engine.db, session, engine.node, "run.lease_lost", {"worker": owner.rsplit(":", 1)[0]},
                      run_id=run.id)
        return Outcome(run.id, "lease_lost", "another worker reclaimed the run")
    if result is not None and result.ok and result.mode.live and hasattr(adapter, "persist"):
        # What a live call left at the provider (ids, form responses) is stored with the
        # outcome; persisting may trim the response (ingested items become events).
        adapter.persist(engine.db, session, engine.node, run.id, result)
    settlement = pipeline.settle(run.id, adapter, ctx, payload, mode, result, error)
    return settle_in(engine, session, run, owner, adapter, settlement, rollback)


def settle_in(engine: Any, session: Any, run: Any, owner: str, adapter: Any, settlement: pipeline.Settlement,
              rollback: str | None = None) -> Any:
    """Final status, then the audit record and the event, in the caller's transaction.

    The status moves first (a compare-and-set on the lease owner): only a finish that moved it
    writes the audit record, so a call is recorded once however many workers finish it.
    """
    from .engine import Outcome

    status = final_status(settlement)
    fields = {"result": settlement.body} if settlement.ok else {"error": settlement.error}
    moved = engine.transition(session, run.id, (RunStatus.RUNNING,), status, announce=False, where="owned",
                              where_params={"w_owner": owner}, **fields)
    if not moved:
        events.append(engine.db, session, engine.node, "run.lease_lost", {"worker": owner.rsplit(":", 1)[0]},
                      run_id=run.id)
        return Outcome(run.id, "lease_lost", "another worker reclaimed the run")
    record = audit.append(engine.db, session, settlement.record)
    if rollback:
        adapter_state.roll_back(engine.db, session, adapter.name, engine.node, rollback, run.id)
    data = {"mode": record["mode"], "audit": record["pk"]} if settlement.ok else {"error": settlement.error}
    events.append(engine.db, session, engine.node, f"run.{status.value}", data, run_id=run.id)
    engine._record_steps(session, run.pk, {"act": True}, [act_done(record, status, run.attempts)])
    return Outcome(run.id, status.value)

"""The pipeline's steps that need no database: route, how many approvals, mode, simulated act.

Because none of this reads or writes rows, a worker works out a fresh run *before* it takes a
write transaction (on SQLite one writer at a time holds the lock): the transaction then only
checks that the run is still the one it planned for and writes the outcome. Anything that does
need the database (votes, a form cursor, a rollout, an earlier attempt's steps) is left to the
transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from . import audit, run_results
from .adapters import BY_GOAL, CallContext, Mode
from .documents import CRITICAL_GOALS
from .errors import AuroraError
from .policy import Policy
from .router import Rules, route

log = logging.getLogger(__name__)


class RolloutsNotRead(Exception):
    """A mode decision needed the adapters' rollouts, which live in the database."""


class _Unread(Mapping[str, Any]):
    def __getitem__(self, name: str) -> Any:
        raise RolloutsNotRead(name)

    def __iter__(self) -> Iterator[str]:
        raise RolloutsNotRead("*")

    def __len__(self) -> int:
        raise RolloutsNotRead("*")


#: rollouts for a decision made outside a transaction: reading them abandons the early decision
UNREAD: Mapping[str, Any] = _Unread()


@dataclass
class Plan:
    """What a run will do, as far as it could be worked out."""

    payload: dict[str, Any]
    #: steps to record (route; the engine adds gate and act)
    pending: list[dict[str, Any]]
    #: approvals the policy requires before the run may act
    required: int
    #: None: decide in the transaction, with the rollouts
    mode: Mode | None = None
    #: the simulated call's outcome, when it could be made ahead
    simulated: Settlement | None = None


@dataclass(frozen=True)
class Settlement:
    """A call's outcome, redacted and ready to be written: its audit record, and the run's
    result (``ok``; as stored, without what the record holds: ``aurora.run_results``) or error."""

    result: Any
    ok: bool
    record: audit.Prepared
    body: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


def route_step(run: Any, steps: dict[str, Any], policy: Policy, pending: list[dict[str, Any]]) -> dict[str, Any]:
    """The route step's result: the one an earlier attempt recorded, or a new one (then pending)."""
    done = steps.get("route")
    if done is not None and done.status == "done":
        return done.result or {}
    payload = run.document["payload"]
    if run.goal == "analyse":
        if payload.get("engine"):
            result: dict[str, Any] = {"engine": payload["engine"], "reason": "engine named in the payload"}
        else:
            decision = route(payload["text"], Rules.from_policy(policy.routing, policy.version))
            result = {"engine": decision.target, "ranking": list(decision.ranking), "decision": decision.as_dict()}
    else:
        result = {"adapter": BY_GOAL[run.goal].name}
    pending.append({"step": "route", "status": "done", "result": result})
    return result


def plan(run: Any, steps: dict[str, Any], ctx: CallContext, ahead: bool = False, simulate: bool = True) -> Plan:
    """Route and count approvals; ``ahead`` (outside any transaction) also decides the mode and
    makes the simulated call when that needs nothing from the database."""
    policy = ctx.policy
    payload = dict(run.document["payload"])
    pending: list[dict[str, Any]] = []
    routed = route_step(run, steps, policy, pending)
    if "engine" in routed:
        payload["engine"] = routed["engine"]
        payload["candidates"] = routed.get("ranking") or [routed["engine"]]
    required = policy.required_approvals(run.goal in CRITICAL_GOALS, bool(run.document["payload"].get("require_approval")))
    result = Plan(payload, pending, required)
    # votes and form cursors are rows; a critical run's mode may stop it (aurora.outcomes)
    if not ahead or required or run.goal == "ingest_forms" or run.goal in CRITICAL_GOALS:
        return result
    adapter = BY_GOAL[run.goal]
    early = replace(ctx, rollouts=UNREAD)
    try:
        result.mode = adapter.decide(payload, early)
        if simulate and not result.mode.live:
            outcome, error = call_simulated(adapter, run, payload, early, result.mode)
            result.simulated = settle(run.id, adapter, early, payload, result.mode, outcome, error)
    except RolloutsNotRead:
        result.mode = result.simulated = None
    return result


def call_simulated(adapter: Any, run: Any, payload: dict[str, Any], ctx: CallContext,
                   mode: Mode) -> tuple[Any, dict[str, Any] | None]:
    """(result, error) of a call that leaves nothing behind outside the database."""
    log.info("run %s: attempt %d, acting through %s (%s: %s)", run.id, run.attempts or 1, adapter.name, mode.name,
             mode.reason, extra={"step": "act", "mode": mode.name, "attempt": run.attempts or 1, "goal": run.goal})
    try:
        return adapter.call(payload, ctx, mode), None
    except RolloutsNotRead:
        raise
    except AuroraError as exc:
        return None, {"type": exc.code, "message": str(exc)}
    except Exception as exc:  # noqa: BLE001 - an adapter bug must fail the run, not loop it
        log.exception("adapter %s failed on run %s", adapter.name, run.id)
        return None, {"type": "internal_error", "message": exc.__class__.__name__}


def settle(run_id: str, adapter: Any, ctx: CallContext, payload: dict[str, Any], mode: Mode, result: Any,
           error: dict[str, Any] | None) -> Settlement:
    """Redact a call's outcome and prepare its audit record (outside any transaction)."""
    secrets = ctx.secrets
    ok = result is not None and result.ok
    record = audit.prepare(
        run_id=run_id, adapter=adapter.name, operation=adapter.operation,
        mode=result.mode.name if result else mode.name,
        reason=result.mode.reason if result else mode.reason,
        request=secrets.redact(result.request if result else {"payload": payload}),
        # a call that may have happened at the provider is neither a success nor a failure
        outcome="ok" if ok else "unknown" if (error or {}).get("type") == "needs_reconciliation" else "error",
        response=secrets.redact(result.response if result else error),
        duration_ms=result.duration_ms if result else 0.0,
    )
    if ok:
        return Settlement(result, True, record, body=run_results.stored(secrets.redact(result.as_dict()), record.fields))
    # the mode goes with the error too: a failed live call must not read like a failed simulation
    error = {**(error or {"type": "adapter_error", "message": "the call failed"}),
             "mode": record.fields["mode"], "mode_reason": record.fields["reason"]}
    return Settlement(result, False, record, error=secrets.redact(error))

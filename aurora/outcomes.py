"""Outcomes that never pretend: a run's mode at a glance, and critical runs that stop instead of
passing a simulation off as the real thing.

A run says at the top level whether it acted **live** or **simulated** (or not at all: ``None``)
and why, so no surface (API, CLI, page, metrics) can show a simulated charge as a charge.

A critical run (``charge``, ``post_external``) whose policy means its adapter to act live, but
which would be simulated by circumstance — outside the canary share, the adapter rolled back,
its secrets missing — ends ``not_acted`` with the error type ``would_be_simulated``: nothing was
sent, nothing pretends to have been, and the error says what to do. Ending it ``succeeded``
would tell the submitter (and ``aurora submit --wait``) that a customer was charged who was not;
ending it ``failed`` would hide that nothing happened at all. It is final: after the cause is
dealt with, the workflow is submitted again (and approved again, for what will then be live).
"""

from __future__ import annotations

from typing import Any

from .adapters import Mode
from .documents import CRITICAL_GOALS
from .models import RunStatus

#: the error type of a run that ended ``not_acted``
WOULD_BE_SIMULATED = "would_be_simulated"


def what_to_do(adapter: str, reason: str) -> str:
    """The step that lets such a run act live, from the reason it would not."""
    if reason.startswith("canary"):
        step = f"end the canary (aurora adapters promote {adapter})"
    elif reason.startswith("rolled back"):
        step = f"fix the cause, then re-enable the adapter (aurora adapters enable {adapter})"
    elif reason.startswith("secrets"):
        step = f"configure {adapter}'s credentials in the secrets file"
    else:
        step = "make the policy and the adapter agree on live mode"
    return f"nothing was sent; {step}, then submit the workflow again, or set the policy to dry run if a simulation was meant"


def pretends(goal: str, mode: Mode) -> bool:
    """Would this run's act be a simulation where the policy means a live call?"""
    return goal in CRITICAL_GOALS and not mode.live and mode.intended_live


def stop_not_acted(engine: Any, session: Any, run: Any, adapter: Any, mode: Mode, steps: dict[str, Any],
         pending: list[dict[str, Any]]) -> Any:
    """End the claimed run ``not_acted`` (in the claim's transaction); no call is made, so there
    is no audit record: the run's error and its ``run.not_acted`` event carry the reason."""
    from .engine import Outcome

    error = {"type": WOULD_BE_SIMULATED, "adapter": adapter.name, "mode": None, "mode_reason": mode.reason,
             "message": f"the policy means {adapter.name} to act live, but this run would only be simulated "
                        f"({mode.reason})",
             "what_to_do": what_to_do(adapter.name, mode.reason)}
    engine._record_steps(session, run.pk, steps, [
        *pending, engine._gate_open,
        {"step": "act", "status": "done", "attempt": run.attempts,
         "result": {"acted": False, "mode": mode.name, "reason": mode.reason}}])
    engine.transition(session, run.id, (RunStatus.RUNNING,), RunStatus.NOT_ACTED,
                      {"error": WOULD_BE_SIMULATED, "adapter": adapter.name, "reason": mode.reason}, error=error)
    return Outcome(run.id, RunStatus.NOT_ACTED.value, "would be simulated", run.goal, run.created_at)


def mode_of(run: Any) -> tuple[str | None, str | None]:
    """(``live`` | ``simulated`` | None, its reason) of a run, from what it stored: the result of
    a run that acted, else the mode its error records (None before it acted, or if it never did)."""
    result = run.result or {}
    if result.get("mode") in ("live", "simulated"):
        return result["mode"], result.get("reason")
    error = run.error or {}
    if "mode_reason" in error or error.get("mode") in ("live", "simulated"):
        return error.get("mode"), error.get("mode_reason")
    return None, None

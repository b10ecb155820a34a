"""Runs that cannot act now because the secrets file or the policy cannot be used.

A worker needs both before it may even decide a run's mode. When the secrets file is unsafe
(readable by group or others), unreadable or malformed, or the policy cannot be loaded, the run
stays ``queued`` — nothing about it is wrong, and nothing was done — but visibly so: its
``error`` says what blocks it and what to do (``{"type": "blocked", "component": "secrets", …}``,
shown as ``blocked`` in the API, the CLI and the page), a ``run.blocked`` event says it in the
timeline (once per distinct cause, not at every retry), and ``/health`` reports the component.

The sweeper sends a queued run again when its message is gone (``AURORA_REQUEUE_AFTER``); the
run is tried again then, and once the cause is fixed it proceeds under the policy and secrets in
force at that moment (the claim clears ``error``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from . import events
from .errors import ConfigError, SecretsError
from .models import Run, RunStatus

if TYPE_CHECKING:
    from .engine import Engine, Outcome

log = logging.getLogger(__name__)

#: the error type of a queued run that cannot act now
BLOCKED = "blocked"


def cause(exc: ConfigError) -> dict[str, Any]:
    """What blocks runs, and what to do about it (the message names files, never their content)."""
    if isinstance(exc, SecretsError):
        component, fix = "secrets", "fix the secrets file (chmod 600, valid JSON of sections); queued runs then proceed"
    else:
        component, fix = "policy", "fix the policy file (aurora doctor shows what is wrong); queued runs then proceed"
    return {"type": BLOCKED, "component": component, "message": str(exc), "what_to_do": fix}


def block(engine: Engine, run_id: str, exc: ConfigError) -> Outcome:
    """Mark a queued run blocked by ``exc``; append ``run.blocked`` if the cause is new for it."""
    from .engine import Outcome

    error = cause(exc)
    log.warning("run %s: blocked: %s", run_id, error["message"], extra={"step": "claim", "blocked": error["component"]})
    with engine.db.write() as session:
        row = session.execute(select(Run.status, Run.error).where(Run.id == run_id)).one_or_none()
        if row is None:
            return Outcome(run_id, "missing", "no such run")
        if row.status != RunStatus.QUEUED.value:
            return Outcome(run_id, row.status, f"not claimable; {error['component']} unusable")
        if row.error != error:
            session.execute(update(Run).where(Run.id == run_id, Run.status == RunStatus.QUEUED.value)
                            .values(error=error))
            events.append(engine.db, session, engine.node, "run.blocked",
                          {"component": error["component"], "message": error["message"],
                           "what_to_do": error["what_to_do"]}, run_id=run_id)
    return Outcome(run_id, RunStatus.QUEUED.value, f"blocked: {error['component']}")


def blocked(run: Any) -> dict[str, Any] | None:
    """The cause that blocks a queued run, or None."""
    error = run.error or {}
    if run.status == RunStatus.QUEUED.value and error.get("type") == BLOCKED:
        return error
    return None

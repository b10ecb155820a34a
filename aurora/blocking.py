"""Runs that cannot act now because the secrets file or the policy cannot be used.

A worker needs both before it may even decide a run's mode (:func:`usable`). When the secrets
file is unsafe (readable by group or others), unreadable or malformed, or missing while the policy
means some adapter live; or the policy cannot be loaded, or the file on disk holds an edit that
was refused (the process still knows the last good policy, but acting on it would be fail-open:
whoever broke the file meant something else), the run stays ``queued`` — nothing about it is wrong, and nothing was done — but visibly so: its
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
from .errors import ConfigError, PolicyError, SecretsError
from .models import Run, RunStatus

if TYPE_CHECKING:
    from collections.abc import Callable

    from .engine import Engine, Outcome
    from .policy import Policy, PolicyStore
    from .secrets import Secrets

log = logging.getLogger(__name__)

#: the error type of a queued run that cannot act now
BLOCKED = "blocked"


def usable(policies: PolicyStore, load_secrets: Callable[[], Secrets]) -> tuple[Policy, Secrets]:
    """The policy and secrets a run may act under now, or the :class:`ConfigError` that blocks it.

    Fail closed: a refused edit of the policy file blocks acting until the file is fixed (the
    last good policy is what the file no longer says); a missing secrets file blocks when the
    policy means an adapter live and no ``AURORA_SECRET_*`` variable stands in for it (a deleted
    file is a mistake to say, not "not configured" to simulate quietly)."""
    policy = policies.current()
    if policies.last_error is not None:
        raise PolicyError(f"the policy file holds a refused edit, so no run acts until it is fixed: "
                          f"{policies.last_error}")
    return policy, secrets_for(policy, load_secrets)


def secrets_for(policy: Policy | None, load_secrets: Callable[[], Secrets]) -> Secrets:
    """The secrets, or the :class:`SecretsError` that blocks acting under ``policy``."""
    secrets = load_secrets()
    if policy is not None and secrets.file_missing and not secrets.values:
        from .adapters import BY_NAME
        from .adapters.base import policy_keeps_simulated

        meant = [name for name in BY_NAME if policy_keeps_simulated(name, policy) is None]
        if meant:
            raise SecretsError(f"the secrets file is missing, and the policy means {', '.join(meant)} live; "
                               "restore it (chmod 600), or set the policy to dry_run")
    return secrets


def cause(exc: ConfigError) -> dict[str, Any]:
    """What blocks runs, and what to do about it (the message names files, never their content)."""
    if isinstance(exc, SecretsError):
        component, fix = "secrets", ("fix the secrets file (there, chmod 600, valid JSON of sections); "
                                     "queued runs then proceed")
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

"""A run the provider asked to call back later (``Retry-After`` within the ceiling): queued again
for then, no worker sleeping through it.

The run goes from running back to queued with ``enqueued_at`` set to the not-before time, and
its message is sent with a countdown (Celery holds it in a worker until then). The sweeper
resends a queued run only when its ``enqueued_at`` is ``AURORA_REQUEUE_AFTER`` seconds old, so a
deferred run's future ``enqueued_at`` keeps it from being resent early, while a message lost with
its worker is still sent again after the wait. The act step the attempt began is removed: a 429
means the provider did not act, and a begun act would otherwise be given up as ambiguous.
Each deferral counts as an attempt, so a provider that never stops asking ends the run after
``MAX_ATTEMPTS`` ("too many attempts") instead of deferring it forever.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete

from . import audit
from .adapters import CallContext, Mode
from .adapters.base import RetryLater
from .models import RunStatus, RunStep, utcnow

if TYPE_CHECKING:
    from .engine import Engine, Outcome

log = logging.getLogger(__name__)


def defer(engine: Engine, run: Any, owner: str, adapter: Any, ctx: CallContext, payload: dict[str, Any],
          mode: Mode, exc: RetryLater) -> Outcome:
    from .engine import Outcome
    from .queue import enqueue

    now = utcnow()
    not_before = now + timedelta(seconds=exc.seconds)
    reason = f"{exc}: queued again for {not_before.isoformat(timespec='seconds')}"
    record = audit.prepare(run_id=run.id, adapter=adapter.name, operation=adapter.operation, mode=mode.name,
                           reason=reason[:255], request=ctx.secrets.redact({"payload": payload}), outcome="error",
                           response=ctx.secrets.redact({"type": "retry_later", "retry_after_seconds": exc.seconds,
                                                        "response": exc.response}))
    with engine.db.write() as session:
        moved = engine.transition(
            session, run.id, (RunStatus.RUNNING,), RunStatus.QUEUED,
            {"reason": reason, "not_before": not_before.isoformat(), "retry_after_seconds": exc.seconds},
            where="owned", where_params={"w_owner": owner},
            lease_owner=None, lease_expires_at=None, step=None, enqueued_at=not_before)
        if moved:
            session.execute(delete(RunStep).where(RunStep.run_pk == run.pk, RunStep.step == "act"))
            audit.append(engine.db, session, record)
    if not moved:
        return Outcome(run.id, "lost_lease", "another worker took the run while the provider said wait")
    enqueue(run.id, countdown=exc.seconds)
    log.info("run %s: %s", run.id, reason, extra={"step": "defer", "status": RunStatus.QUEUED.value})
    return Outcome(run.id, RunStatus.QUEUED.value, reason)

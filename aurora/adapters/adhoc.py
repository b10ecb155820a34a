"""The seed's module-level functions (``stripe_adapter.charge_customer(...)`` and the others):
calls made outside any run.

Such a call has passed no approval gate, so it is always simulated (``decide_mode`` says so for
every call without a run id, and its reason says how to act for real: submit a workflow). It has
its own idempotency key (a fresh id per call), and it is written to the audit log like every
other adapter call. The audit record needs the database: when there is none yet (a fresh
checkout before ``aurora db upgrade``) the result says it was not recorded, and why.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .. import audit
from ..config import load_settings
from ..policy import PolicyStore
from ..secrets import load_secrets
from .base import Adapter, CallContext

log = logging.getLogger(__name__)


def default_context() -> CallContext:
    """A context for one call outside any run: the policy and secrets in force now, no run id,
    and a fresh ``call_id`` (so the call's idempotency key is its own)."""
    settings = load_settings()
    return CallContext(
        run_id=None,
        policy=PolicyStore(settings.policy_file).current(),
        secrets=load_secrets(settings.secrets_file),
    )


def call(adapter: Adapter, payload: dict[str, Any], ctx: CallContext | None = None) -> dict[str, Any]:
    """Make one simulated call outside a run, record it, and return the seed's result shape."""
    ctx = ctx or default_context()
    mode = adapter.decide(payload, ctx)
    assert not mode.live, "a call outside a run is never live"
    result = adapter.call(payload, ctx, mode)
    body = ctx.secrets.redact(result.as_dict())
    body["audit"] = _record(adapter, ctx, result, body)
    return body


def _record(adapter: Adapter, ctx: CallContext, result: Any, body: dict[str, Any]) -> dict[str, Any]:
    """Append the audit record; never fail the (simulated) call because the log is not there."""
    from ..db import Database

    settings = load_settings()
    url = settings.database_url
    try:
        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
            # Opening it would create an empty database file where none was meant to be.
            return {"recorded": False, "why": "no database yet; run: aurora db upgrade"}
        db = Database(url, settings.audit_key_path)
        with db.write() as session:
            record = audit.append(db, session, run_id=None, adapter=adapter.name, operation=adapter.operation,
                                  mode=result.mode.name, reason=result.mode.reason[:255], request=body["request"],
                                  outcome="ok", response=None, duration_ms=result.duration_ms)
        return {"recorded": True, "pk": record["pk"]}
    except Exception as exc:  # noqa: BLE001 - the caller gets the simulated result and the reason
        log.warning("ad-hoc %s call: audit record not written (%s)", adapter.name, exc.__class__.__name__)
        return {"recorded": False, "why": f"the audit log could not be written ({exc.__class__.__name__})"}

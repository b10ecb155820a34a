"""Policy reloads in the audit chain: who may switch payments live is a decision the ledger keeps.

The policy store (``policy.py``) has no database; the runtime gives it a listener that calls
:func:`record_reload`. Every process of a node (web workers, Celery children, beat) notices the
same edit, so a reload is written once per version: the check for an existing record of that
version and the append run under the audit lock, in one transaction.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from . import audit
from .db import Database
from .models import AuditRecord
from .policy import Policy

log = logging.getLogger(__name__)

SUBJECT = "policy"
OPERATION = "reload"


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        out.update(_flat(value, path) if isinstance(value, dict) and value else {path: value})
    return out


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The dotted paths whose value was added, removed or changed (values stay out of the record:
    the file is the place to read them, the ledger says what moved and when)."""
    before, after = _flat(old), _flat(new)
    return sorted(k for k in before.keys() | after.keys() if before.get(k, object()) != after.get(k, object()))


def _reason(version: str) -> str:
    return f"policy version {version}"


def record_reload(db: Database, old: Policy | None, new: Policy, path: str) -> bool:
    """Write the reload to ``new.version`` unless a record of that version exists; True if written."""
    details = {"version": new.version, "previous": old.version if old else None, "file": path,
               "changed": changed_keys(old.data if old else {}, new.data)}
    with db.write() as session:
        db.lock(session, *audit.OUTBOX_LOCKS)  # the same lock append takes: check and write are one turn
        seen = session.scalar(select(AuditRecord.pk).where(
            AuditRecord.adapter == SUBJECT, AuditRecord.operation == OPERATION,
            AuditRecord.reason == _reason(new.version)).limit(1))
        if seen is not None:
            return False
        audit.note(db, session, SUBJECT, OPERATION, details, reason=_reason(new.version))
    return True


def listener(db: Database, path: str):  # noqa: ANN201 - a closure the policy store calls
    def on_reload(old: Policy | None, new: Policy) -> None:
        try:
            record_reload(db, old, new, path)
        except Exception:  # noqa: BLE001 - a database outage must not stop the policy from applying
            log.exception("policy version %s is in force but could not be recorded in the audit log",
                          new.version)
    return on_reload

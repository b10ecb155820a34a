"""Policy changes in the audit chain: who may switch payments live is a decision the ledger keeps.

The policy store (``policy.py``) has no database; the runtime gives it a listener that calls
:func:`record_reload`. Every process of a node (web workers, Celery children, beat) notices the
same edit, so each change is written once: the newest policy record of the chain is read and the
new one appended under the audit lock, in one transaction, only when the version differs.

An edit made while the stack was stopped is seen by no reload: each process reads the edited file
at start. So the commands that start the stack (``aurora up``/``bootstrap``, ``aurora db upgrade``
that the web unit runs first, ``aurora worker``, ``aurora serve``) call :func:`record_start`,
which compares the policy in force with the chain's last record and records the change, with
the old and the new hash, when they differ.

A record carries the policy's version (a hash of its parsed content), the SHA-256 of the file's
bytes (what ``sha256sum`` prints), the dotted keys that changed, and a digest of each key's value:
never the values themselves (the file is the place to read them), but enough that the next record
can say which keys moved even when nobody saw the old file's content (an edit while stopped).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from sqlalchemy import select

from . import audit
from .db import OUTBOX_LOCKS, Database
from .errors import PolicyError
from .models import AuditRecord
from .policy import Policy

log = logging.getLogger(__name__)

SUBJECT = "policy"
OPERATION = "reload"
#: the operation of a record written at start: a first policy, or one edited while stopped
AT_START = "start"


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


def key_digests(data: dict[str, Any]) -> dict[str, str]:
    """Each dotted key's value, hashed: what a later record compares to name the changed keys."""
    return {key: hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
            for key, value in _flat(data).items()}


def _changed_since(last: dict[str, Any] | None, old: Policy | None, new: Policy) -> list[str] | None:
    """The keys that changed since the last record (or, without one, since ``old``); None when
    neither is known (a record from before key digests, and nothing in memory)."""
    if last is not None and isinstance(last.get("keys"), dict):
        before, after = last["keys"], key_digests(new.data)
        return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if last is None or (old is not None and last.get("version") == old.version):
        return changed_keys(old.data if old else {}, new.data)
    return None


def last_recorded(session: Any) -> dict[str, Any] | None:
    """What the chain's newest policy record says (version, sha256, keys), or None."""
    request = session.scalar(select(AuditRecord.request).where(
        AuditRecord.adapter == SUBJECT, AuditRecord.operation.in_((OPERATION, AT_START)))
        .order_by(AuditRecord.pk.desc()).limit(1))
    return request if isinstance(request, dict) else None


def record_change(db: Database, old: Policy | None, new: Policy, path: str, operation: str = OPERATION) -> bool:
    """Append a policy record unless the chain's newest one is of ``new.version``; True if written."""
    with db.write() as session:
        db.lock(session, *OUTBOX_LOCKS)  # the same locks append takes: check and write are one turn
        last = last_recorded(session)
        if last is not None and last.get("version") == new.version:
            return False
        previous = last.get("version") if last else (old.version if old else None)
        details = {"version": new.version, "previous": previous, "sha256": new.sha256,
                   "previous_sha256": last.get("sha256") if last else (old.sha256 if old else None),
                   "file": path, "changed": _changed_since(last, old, new), "keys": key_digests(new.data)}
        if operation == AT_START:
            reason = (f"policy version {new.version} at start: changed from {previous} while stopped" if previous
                      else f"policy version {new.version} at first start")
        else:
            reason = f"policy version {new.version}" + (f" (was {previous})" if previous else "")
        audit.note(db, session, SUBJECT, operation, details, reason=reason)
    if operation == AT_START and previous:
        log.warning("the policy file changed while Aurora was stopped (version %s, was %s): recorded in the "
                    "audit log", new.version, previous)
    return True


def record_reload(db: Database, old: Policy | None, new: Policy, path: str) -> bool:
    """A reload this process saw: recorded unless another process recorded that version last."""
    return record_change(db, old, new, path, OPERATION)


def record_start(db: Database, store: Any) -> bool:
    """At start: record the policy in force if the chain's last policy record is not of it (the
    file was edited while the stack was stopped, or this is the first start). Never raises: a
    start is not stopped by the ledger (the next reload or start records it)."""
    try:
        policy = store.current()
    except PolicyError:
        return False  # no policy in force: nothing to record, and the start refuses it anyway
    try:
        with db.read() as session:  # the usual case, nothing changed, takes no writer turn
            last = last_recorded(session)
        if last is not None and last.get("version") == policy.version:
            return False
        return record_change(db, None, policy, str(store.path), AT_START)
    except Exception as exc:  # noqa: BLE001 - an unmigrated or unreachable database must not stop a start
        log.error("policy version %s could not be compared with the audit log at start (%s); the next "
                  "start or reload records it", policy.version, exc.__class__.__name__)
        return False


def listener(db: Database, path: str):  # noqa: ANN201 - a closure the policy store calls
    def on_reload(old: Policy | None, new: Policy) -> None:
        try:
            record_reload(db, old, new, path)
        except Exception:  # noqa: BLE001 - a database outage must not stop the policy from applying
            log.exception("policy version %s is in force but could not be recorded in the audit log",
                          new.version)
    return on_reload

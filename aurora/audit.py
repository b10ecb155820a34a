"""The audit log: one append-only, hash-chained record per adapter call, simulated or live.

Each record's ``hash`` covers its content and the previous record's hash, so an edited or
deleted record breaks the chain from there on; :func:`verify` finds the first break.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .db import Database
from .models import AuditRecord, utcnow

#: the ``prev_hash`` of the first record
GENESIS = "0" * 64
_TABLE = AuditRecord.__table__
_INSERT = _TABLE.insert()
_LAST_HASH = select(_TABLE.c.hash).order_by(_TABLE.c.pk.desc()).limit(1)
#: advisory lock key that serialises appends on PostgreSQL ("AURORA_AU")
AUDIT_LOCK_KEY = 0x4155524F52415F41


def _content(record: AuditRecord) -> dict[str, Any]:
    return {
        "created_at": record.created_at.isoformat(),
        "run_id": record.run_id,
        "adapter": record.adapter,
        "operation": record.operation,
        "mode": record.mode,
        "reason": record.reason,
        "request": record.request,
        "outcome": record.outcome,
        "response": record.response,
        "duration_ms": round(record.duration_ms, 3),
    }


def record_hash(prev_hash: str, record: AuditRecord) -> str:
    canonical = json.dumps(_content(record), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


def append(db: Database, session: Session, **fields: Any) -> dict[str, Any]:
    """Add one record, chained to the newest one, to the session's transaction; return its values.

    ``fields`` must already be redacted: nothing here knows what a secret looks like.
    """
    db.lock(session, AUDIT_LOCK_KEY)
    conn = session.connection()
    prev = conn.execute(_LAST_HASH).scalar() or GENESIS
    fields.setdefault("created_at", utcnow())
    fields["duration_ms"] = round(float(fields.get("duration_ms", 0.0)), 3)
    fields["prev_hash"] = prev
    fields["hash"] = record_hash(prev, AuditRecord(**fields))
    fields["pk"] = conn.execute(_INSERT, fields).inserted_primary_key[0]
    return fields


def verify(records: Iterable[AuditRecord]) -> tuple[bool, int | None, str]:
    """Walk the chain in order; return (intact, pk of the first bad record, why)."""
    prev = GENESIS
    for record in records:
        if record.prev_hash != prev:
            return False, record.pk, "a record before it was changed or deleted"
        if record_hash(prev, record) != record.hash:
            return False, record.pk, "its content does not match its hash"
        prev = record.hash
    return True, None, "intact"


def as_dict(record: AuditRecord) -> dict[str, Any]:
    return {"pk": record.pk, **_content(record), "prev_hash": record.prev_hash, "hash": record.hash}

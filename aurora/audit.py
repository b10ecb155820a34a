"""The audit log: one append-only, hash-chained record per adapter call, simulated or live.

Each record's ``hash`` covers its content and the previous record's hash, so an edited or
deleted record breaks the chain from there on; :func:`verify` finds the first break.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from .db import Database, connection_of
from .models import AuditRecord, utcnow

#: the ``prev_hash`` of the first record
GENESIS = "0" * 64
_TABLE = AuditRecord.__table__
_INSERT = _TABLE.insert()
_LAST_HASH = select(_TABLE.c.hash).order_by(_TABLE.c.pk.desc()).limit(1)
#: advisory lock key that serialises appends on PostgreSQL ("AURORA_AU")
AUDIT_LOCK_KEY = 0x4155524F52415F41


def _content(record: Any) -> dict[str, Any]:
    """What a record's hash covers; ``record`` is a row or a dict of its fields."""
    get = record.get if isinstance(record, dict) else lambda name: getattr(record, name)
    return {
        "created_at": get("created_at").isoformat(),
        "run_id": get("run_id"),
        "adapter": get("adapter"),
        "operation": get("operation"),
        "mode": get("mode"),
        "reason": get("reason"),
        "request": get("request"),
        "outcome": get("outcome"),
        "response": get("response"),
        "duration_ms": round(get("duration_ms"), 3),
    }


def _canonical(record: Any) -> str:
    return json.dumps(_content(record), sort_keys=True, separators=(",", ":"), default=str)


def record_hash(prev_hash: str, record: Any) -> str:
    return hashlib.sha256((prev_hash + _canonical(record)).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Prepared:
    """A record's fields and the canonical text its hash covers, made before any transaction:
    appending then only chains it to the newest record."""

    fields: dict[str, Any]
    canonical: str


def prepare(**fields: Any) -> Prepared:
    """``fields`` must already be redacted: nothing here knows what a secret looks like."""
    fields.setdefault("created_at", utcnow())
    fields["duration_ms"] = round(float(fields.get("duration_ms", 0.0)), 3)
    return Prepared(fields, _canonical(fields))


def append(db: Database, session: Session | Connection, prepared: Prepared | None = None, **fields: Any) -> dict[str, Any]:
    """Add one record, chained to the newest one, to the session's transaction; return its values.

    Give either a record made by :func:`prepare` or its ``fields`` (already redacted).
    """
    prepared = prepared or prepare(**fields)
    db.lock(session, AUDIT_LOCK_KEY)
    conn = connection_of(session)
    prev = conn.execute(_LAST_HASH).scalar() or GENESIS
    values = {**prepared.fields, "prev_hash": prev,
              "hash": hashlib.sha256((prev + prepared.canonical).encode("utf-8")).hexdigest()}
    values["pk"] = conn.execute(_INSERT, values).inserted_primary_key[0]
    return values


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

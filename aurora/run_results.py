"""A run's result as stored, and as shown: the request and response live in the audit record.

The result of a run that acted says what the adapter did: its message, mode and reason, and the
exact (redacted) request it sent or would have sent, with the provider's response. The audit
record written in the same transaction holds that very request and response, hash-chained; a
copy of both in ``runs.result`` was a third of a dry run's bytes. So the stored result names the
keys it left to the audit record (``in_audit``), and every reader that shows or uses a result
takes it through :func:`full` (or :func:`full_many`), which puts them back from the record: the
API, the CLI, the run page and a workflow's step outputs see the result as it always was.

Results stored before this (whole) have no ``in_audit`` and are shown as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, and_, bindparam, select
from sqlalchemy.orm import Session

from .db import connection_of
from .models import AuditRecord

#: the key of a stored result that lists what its audit record holds instead
IN_AUDIT = "in_audit"
#: what may be left to the audit record (in the order the result shows them)
MOVABLE = ("request", "response")

_AUDIT = AuditRecord.__table__
#: the call record of runs: the ``ok`` record of the adapter's call, written with the final status
#: (records a run gets later — a payment's retrieval, a rollback — are other operations)
_CALL = select(_AUDIT.c.pk, _AUDIT.c.run_id, _AUDIT.c.adapter, _AUDIT.c.operation, _AUDIT.c.mode,
               _AUDIT.c.request, _AUDIT.c.response).where(_AUDIT.c.outcome == "ok").order_by(_AUDIT.c.pk)
_CALLS = _CALL.where(_AUDIT.c.run_id.in_(bindparam("rids", expanding=True)))
#: ... of one run (an expanding IN is compiled anew at every execution: a third of one run's read)
_CALLS_OF_ONE = _CALL.where(_AUDIT.c.run_id == bindparam("rid"))
#: what a run's call record is found by when it is read beside the run (:func:`restored`)
CALL_COLUMNS = (_AUDIT.c.adapter, _AUDIT.c.operation, _AUDIT.c.mode, _AUDIT.c.request, _AUDIT.c.response)
CALL_ORDER = _AUDIT.c.pk


def with_calls(run: Any, run_id: Any) -> Any:
    """``run`` (a table) outer-joined to its ``ok`` audit records, for one read of both."""
    return run.outerjoin(_AUDIT, and_(_AUDIT.c.run_id == run_id, _AUDIT.c.outcome == "ok"))


def stored(body: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """What is written to ``runs.result``: ``body`` without the request and response that the
    audit record's ``record`` fields hold exactly (anything that differs stays in the result)."""
    moved = [key for key in MOVABLE if key in body and body[key] == record.get(key)]
    if not moved:
        return body
    return {**{k: v for k, v in body.items() if k not in moved}, IN_AUDIT: moved}


def _restore(result: dict[str, Any], record: Any | None) -> dict[str, Any]:
    moved = result[IN_AUDIT]
    out: dict[str, Any] = {}
    for key, value in result.items():
        if key == IN_AUDIT:
            continue
        out[key] = value
        if key == "reason" and record is not None:  # where as_dict() puts them
            out.update({k: getattr(record, k) for k in MOVABLE if k in moved})
    if record is not None:
        out.update({k: getattr(record, k) for k in MOVABLE if k in moved and k not in out})
    return out


def _matches(record: Any, result: dict[str, Any]) -> bool:
    return (record.adapter, record.operation, record.mode) == (
        result.get("adapter"), result.get("operation"), result.get("mode"))


def full_many(session: Session | Connection, runs: Iterable[tuple[str, dict[str, Any] | None]]
              ) -> dict[str, dict[str, Any] | None]:
    """{run id: its whole result} for (run id, stored result) pairs, with one read of the audit
    records of the runs whose result needs them."""
    runs = list(runs)
    wanted = [rid for rid, result in runs if result and IN_AUDIT in result]
    records: dict[str, list[Any]] = {}
    if wanted:
        for record in connection_of(session).execute(_CALLS, {"rids": wanted}):
            records.setdefault(record.run_id, []).append(record)
    out: dict[str, dict[str, Any] | None] = {}
    for rid, result in runs:
        if not result or IN_AUDIT not in result:
            out[rid] = result
            continue
        out[rid] = _restore(result, _call_record(records.get(rid, ()), result))
    return out


def _call_record(records: Iterable[Any], result: dict[str, Any]) -> Any | None:
    # the first: a run's call is recorded once (a second worker that finishes it records nothing)
    return next((r for r in records if _matches(r, result)), None)


def full(session: Session | Connection, run_id: str, result: dict[str, Any] | None) -> dict[str, Any] | None:
    """One run's whole result (see :func:`full_many`)."""
    if not result or IN_AUDIT not in result:
        return result
    return restored(result, connection_of(session).execute(_CALLS_OF_ONE, {"rid": run_id}))


def restored(result: dict[str, Any] | None, records: Iterable[Any]) -> dict[str, Any] | None:
    """A run's whole result from its stored ``result`` and its ``ok`` audit records, read already
    (rows with ``adapter``, ``operation``, ``mode``, ``request`` and ``response``, in pk order)."""
    if not result or IN_AUDIT not in result:
        return result
    return _restore(result, _call_record(records, result))

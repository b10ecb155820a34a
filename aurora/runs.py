"""Read-side views of runs: one run with its timeline, and filtered, paginated lists."""

from __future__ import annotations

import base64
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import events, gates, ledger
from .approvals import approval_view, gate_summary
from .blocking import blocked
from .errors import AuroraError, NotFound
from .models import Approval, Run, RunStatus, RunStep
from .outcomes import mode_of

#: the most runs one page of ``GET /workflows`` returns
MAX_PAGE = 200


class BadCursor(AuroraError):
    """Raised when a pagination cursor was not made by this server."""

    code = "bad_cursor"


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def summary(run: Run) -> dict[str, Any]:
    mode, mode_reason = mode_of(run)
    return {
        "id": run.id,
        "name": run.name,
        "goal": run.goal,
        "status": run.status,
        # live, simulated, or None (not acted, or not yet): never to be told apart from the result
        "mode": mode,
        "mode_reason": mode_reason,
        "blocked": blocked(run),
        "submitted_by": run.submitted_by,
        "submitted_by_person": ledger.submitter(run),
        "created_at": _iso(run.created_at),
        "updated_at": _iso(run.updated_at),
        "finished_at": _iso(run.finished_at),
    }


def detail(session: Session, run_id: str) -> dict[str, Any]:
    run = session.scalar(select(Run).where(Run.id == run_id))
    if run is None:
        raise NotFound(f"no run {run_id}")
    steps = session.scalars(select(RunStep).where(RunStep.run_id == run_id).order_by(RunStep.pk))
    rows = list(session.scalars(select(Approval).where(Approval.run_id == run_id).order_by(Approval.pk)))
    bound = (run.approval_binding or {}).get("hash")
    ledger_votes = ledger.votes(session, run_id)
    submitter = ledger.submitter(run)
    return {
        **summary(run),
        "document": run.document,
        "document_hash": run.document_hash,
        "result": run.result,
        "error": run.error,
        "attempts": run.attempts,
        "settlement": run.settlement,
        "step": run.step,
        "started_at": _iso(run.started_at),
        # pruned (aurora.prune): its document, steps and events are in this file
        "archive": run.archive,
        # what approvers approve: the exact request (redacted) in plain words and in full, its mode
        "approval": approval_view(run),
        "approvals": {
            **gate_summary(session, run),
            "request_hash": bound,
            "votes": [
                {"voter": v.voter, "person": lv.who, "decision": v.decision, "comment": v.comment,
                 "channel": v.channel, "document_hash": v.document_hash, "request_hash": v.request_hash,
                 "counts": gates.counts(lv, bound, submitter), "void": lv.void, "at": _iso(v.created_at)}
                for v, lv in zip(rows, ledger_votes, strict=True)
            ],
        },
        "steps": [
            {"step": s.step, "status": s.status, "attempt": s.attempt, "result": s.result,
             "started_at": _iso(s.started_at), "finished_at": _iso(s.finished_at)}
            for s in steps
        ],
        "timeline": [events.as_dict(e) for e in events.for_run(session, run_id)],
    }


def encode_cursor(pk: int) -> str:
    return base64.urlsafe_b64encode(f"r{pk}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("r"):
            raise ValueError
        return int(raw[1:])
    except (ValueError, UnicodeDecodeError):
        raise BadCursor(f"cursor {cursor[:40]!r} is not valid; use the next_cursor of a previous page") from None


def listing(
    session: Session,
    *,
    status: str | None = None,
    goal: str | None = None,
    name: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Newest first; ``next_cursor`` continues after the last run shown."""
    query = select(Run)
    if status:
        query = query.where(Run.status == RunStatus(status).value)
    if goal:
        query = query.where(Run.goal == goal)
    if name:
        query = query.where(Run.name == name)
    if cursor:
        query = query.where(Run.pk < decode_cursor(cursor))
    rows = list(session.scalars(query.order_by(Run.pk.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "runs": [summary(r) for r in rows],
        "next_cursor": encode_cursor(rows[-1].pk) if more and rows else None,
    }

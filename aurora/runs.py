"""Read-side views of runs: one run with its timeline, and filtered, paginated lists."""

from __future__ import annotations

import base64
import re
from typing import Any

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from . import events, flow_runs, gates, ledger, run_results
from .approvals import approval_view, gate_summary
from .blocking import blocked
from .errors import AuroraError, NotFound
from .models import RUN_STEPS_IN_ORDER, Approval, Run, RunStatus, RunStep
from .outcomes import mode_of

#: the most runs one page of ``GET /workflows`` returns
MAX_PAGE = 200
#: the shortest run id prefix accepted for a whole id (the CLI prints 8 characters)
MIN_PREFIX = 6
#: how many candidates an ambiguous prefix names
MAX_CANDIDATES = 10
#: what a run id is made of (a UUID): anything else cannot be a prefix of one, nor a LIKE pattern
_ID_CHARS = re.compile(r"[0-9a-f-]+")


class BadCursor(AuroraError):
    """Raised when a pagination cursor was not made by this server."""

    code = "bad_cursor"


class BadRunId(AuroraError):
    """Raised when a run id (or prefix) is too short to look up."""

    code = "bad_run_id"
    http_status = 400


class AmbiguousRunId(AuroraError):
    """Raised when a run id prefix fits more than one run; names them (``candidates``)."""

    code = "ambiguous_run_id"
    http_status = 409

    def __init__(self, message: str, candidates: list[dict[str, Any]]):
        super().__init__(message)
        self.body_extra = {"candidates": candidates}


def resolve_id(session: Session, given: str) -> str:
    """The full id of the one run whose id is ``given`` or starts with it (at least
    :data:`MIN_PREFIX` characters); ids are lower-case UUIDs, so the prefix is folded too."""
    prefix = given.strip().lower()
    if session.scalar(select(Run.id).where(Run.id == prefix)) is not None:
        return prefix
    if not _ID_CHARS.fullmatch(prefix):
        raise NotFound(f"no run {given[:40]}")
    if len(prefix) < MIN_PREFIX:
        raise BadRunId(f"run id {given[:40]!r} is too short: give at least {MIN_PREFIX} characters of it")
    # SQLite: a range on the unique index (its LIKE folds case and cannot use it); PostgreSQL:
    # LIKE on the text_pattern_ops unique index of migration 0016_pgpath, right in every collation
    bind = session.get_bind()
    fits = (Run.id.like(prefix + "%") if bind.dialect.name == "postgresql"
            else (Run.id >= prefix) & (Run.id < prefix + "\x7f"))
    rows = session.execute(
        select(Run.id, Run.name, Run.status, Run.created_at).where(fits).order_by(Run.id).limit(MAX_CANDIDATES + 1)
    ).all()
    if not rows:
        raise NotFound(f"no run {given[:40]}")
    if len(rows) > 1:
        shown = ", ".join(r.id[:12] for r in rows[:MAX_CANDIDATES]) + (", ..." if len(rows) > MAX_CANDIDATES else "")
        raise AmbiguousRunId(
            f"run id {given[:40]!r} fits {'more than ' if len(rows) > MAX_CANDIDATES else ''}"
            f"{min(len(rows), MAX_CANDIDATES)} runs ({shown}); give more characters",
            [{"id": r.id, "name": r.name, "status": r.status, "created_at": _iso(r.created_at)}
             for r in rows[:MAX_CANDIDATES]])
    return rows[0].id


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def summary(run: Any) -> dict[str, Any]:
    """``run``: a Run, or a row of the runs table with at least these columns."""
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
        **({"workflow": run.parent_id, "step_id": run.step_id, "step_attempt": run.step_attempt}
           if run.parent_id else {}),
    }


#: what :func:`outcome` reads of a run: its summary's columns and the outcome's, without the
#: document, binding and inputs (decoding a document cost more than the rest of the read)
#: ... and beside them its call records (a run's result leaves its request to one: run_results),
#: in one statement: the outcome is read the moment a waiter wakes, on the web's event loop
_OUTCOME = select(*(Run.__table__.c[name] for name in (
    "id", "name", "goal", "status", "result", "error", "submitted_by", "submitted_by_person", "created_at",
    "updated_at", "started_at", "finished_at", "parent_id", "step_id", "step_attempt", "document_hash",
    "attempts", "step")), *run_results.CALL_COLUMNS).select_from(
    run_results.with_calls(Run.__table__, Run.__table__.c.id)).where(
    Run.__table__.c.id == bindparam("rid")).order_by(run_results.CALL_ORDER)


def outcome(connection: Connection, run_id: str) -> dict[str, Any] | None:
    """What a submitter who waits is answered with: the run's summary, result (whole, see
    :mod:`aurora.run_results`) and error. One indexed read of the run with its call records."""
    rows = connection.execute(_OUTCOME, {"rid": run_id}).all()
    if not rows:
        return None
    run = rows[0]
    return {**summary(run), "document_hash": run.document_hash,
            "result": run_results.restored(run.result, rows), "error": run.error,
            "attempts": run.attempts, "step": run.step, "started_at": _iso(run.started_at)}


def detail(session: Session, run_id: str, node: str | None = None) -> dict[str, Any]:
    """One run as the API shows it; ``node`` is this node's name (its timeline holds only this
    node's events: see :func:`events.for_run`)."""
    run = session.scalar(select(Run).where(Run.id == run_id))
    if run is None:
        raise NotFound(f"no run {run_id}")
    steps = session.scalars(select(RunStep).where(RunStep.run_pk == run.pk).order_by(*RUN_STEPS_IN_ORDER))
    rows = list(session.scalars(select(Approval).where(Approval.run_id == run_id).order_by(Approval.pk)))
    bound = (run.approval_binding or {}).get("hash")
    ledger_votes = ledger.votes(session, run_id)
    submitter = ledger.submitter(run)
    return {
        **summary(run),
        "document": run.document,
        "document_hash": run.document_hash,
        # with the request and response its audit record holds (aurora.run_results)
        "result": run_results.full(session, run.id, run.result),
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
        "timeline": [events.as_dict(e) for e in events.for_run(session, run_id, node)],
        # a workflow of several steps: its inputs, and each step with its status, mode, output, approvals
        **({"flow": {"inputs": run.inputs or {}, "steps": flow_runs.steps_view(session, run)}}
           if run.goal == flow_runs.FLOW_GOAL else {}),
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

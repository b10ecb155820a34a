"""A run's events as server-sent events (``text/event-stream``): what one answer holds.

Flask writes every answer; it cannot keep one open without holding a thread, so a stream
answer holds the events so far and an ``Aurora-Follow`` header, from which the waiting layer
(aurora/web/asgi.py) keeps the stream open and asks for the next events when the run changes.
Served without that layer (any plain WSGI server), the answer ends after the events so far and
``retry:`` makes a browser's ``EventSource`` ask again, resuming from ``Last-Event-ID``.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Response, request
from sqlalchemy import select

from ..errors import NotFound
from ..models import Event, Run, RunStatus
from .params import BadParameter

#: events in one answer at most (a following stream asks again at once for the rest)
PAGE = 500
#: what a browser waits before it asks again, after an answer that ended (ms)
RETRY_MS = 1000
#: the header that tells the waiting layer how to go on: "<run id> <last seq> <status>"
FOLLOW = "Aurora-Follow"
#: statuses after which nothing more happens to a run
FINAL = frozenset(s.value for s in RunStatus if s.final)


def after_seq() -> int:
    raw = request.headers.get("Last-Event-ID") or request.args.get("after") or "0"
    try:
        value = int(raw)
    except ValueError:
        raise BadParameter(f"Last-Event-ID / after: {raw[:20]!r} is not an event sequence number") from None
    if value < 0:
        raise BadParameter("Last-Event-ID / after: must be 0 or more")
    return value


def frame(event: dict[str, Any], named: bool = True) -> str:
    """One event; ``named``: its type is the SSE event name (else a browser's ``onmessage`` gets
    every event, and reads the type from the data)."""
    name = f"event: {event['type']}\n" if named else ""
    return f"id: {event['seq']}\n{name}data: {json.dumps(event, separators=(',', ':'))}\n\n"


def snapshot(db: Any, run_id: str, after: int, node: str, named: bool = True) -> tuple[str, int, str, bool]:
    """The events of ``run_id`` after ``after`` as frames, the last seq, the status, and whether
    the stream is over (the run is final and every event was sent). Only ``node``'s own events: a
    run is this node's, and a peer's events carrying its id are that peer's (as in the run's
    timeline, ``events.for_run``), or a peer could write on the run page as it is watched."""
    from .. import events

    with db.read() as session:
        status = session.scalar(select(Run.status).where(Run.id == run_id))
        if status is None:
            raise NotFound(f"no run {run_id}")
        rows = list(session.scalars(select(Event).where(events.of_run(run_id), Event.seq > after)
                                    .order_by(Event.seq).limit(PAGE + 1)))
    more = len(rows) > PAGE
    items = [events.as_dict(e) for e in rows[:PAGE]]
    last = items[-1]["seq"] if items else after
    body = "".join(frame(e, named) for e in items)
    over = status in FINAL and not more
    if over:
        body += f"event: end\ndata: {json.dumps({'id': run_id, 'status': status})}\n\n"
    return body, last, status, over


def stream_response(db: Any, run_id: str, node: str, named: bool = True) -> Response:
    after = after_seq()
    body, last, status, over = snapshot(db, run_id, after, node, named)
    if after == 0:
        body = f"retry: {RETRY_MS}\n\n" + body
    response = Response(body, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # a proxy in front must pass frames on at once
    if not over:
        response.headers[FOLLOW] = f"{run_id} {last} {status}"
    return response

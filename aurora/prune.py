"""``aurora prune --before DATE``: move settled runs' bulky parts out of the database.

A settled run (succeeded, failed, rejected, expired, cancelled, not_acted) finished before DATE
keeps its row — id, name, goal, status, result, error, times — and gives up its document, steps and
events: they are written first, as one JSON line per run, to a gzip file under
``$AURORA_HOME/archive/``, flushed to disk, and only then removed, in batches, each in one
transaction; ``runs.archive`` names the file (``aurora status`` shows it).

What stays whole:

- the audit chain: no audit record is touched, so ``aurora audit verify`` still passes;
- federation cursors: a peer's cursor is a ``seq``; pages after it skip the removed events' numbers
  (``seq > since ... ORDER BY seq``), and no number is ever handed out again;
- the metric tallies (aurora/tallies.py) are advanced before any event is removed.

A ``needs_reconciliation`` run is never pruned: it may still settle.
"""

from __future__ import annotations

import gzip
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update

from . import run_results, tallies
from .db import Database
from .models import RUN_STEPS_IN_ORDER, Event, Run, RunStep, utcnow

#: runs (a window of consecutive pks) per transaction and per read of their parts
BATCH = 500


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _row(obj: Any) -> dict[str, Any]:
    return {c.key: _iso(getattr(obj, c.key)) for c in obj.__table__.columns}


def _event_row(event: Event) -> dict[str, Any]:
    row = _row(event)
    del row["run_pk"]  # the run's id is there
    return row


def _step_row(step: RunStep, run_id: str) -> dict[str, Any]:
    """A step as archived: with its run's id, as steps named their run before 0014_bytes."""
    row = _row(step)
    del row["run_pk"]
    return {**row, "run_id": run_id}


def archive_folder(home: Path) -> Path:
    return home / "archive"


def prune(db: Database, home: Path, before: datetime, node: str, batch: int = BATCH) -> dict[str, Any]:
    """Archive and remove the bulky parts of settled runs finished before ``before`` (``node``:
    this node's name, whose events are the runs' own)."""
    while True:  # every settling event counted before any is removed
        mark = _marks(db)
        tallies.advance(db, node)
        if _marks(db) == mark:
            break
    counted = dict(zip(("_audit", "_seq"), mark, strict=True))["_seq"]
    folder = archive_folder(home)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"runs-{utcnow():%Y%m%dT%H%M%S%fZ}.jsonl.gz"
    runs = events = steps = 0
    with db.read() as session:
        last = session.scalar(select(func.max(Run.pk))) or 0
    with open(path, "xb") as raw, gzip.GzipFile(fileobj=raw, mode="wb") as out:
        # through the runs ``batch`` pks at a time, each window read by its pk range: asking for
        # "the next ``batch`` settled runs after pk" instead had SQLite read every settled run
        # after it through the status index and sort them, for each batch — all the rest of
        # history each time. Runs stored after ``last`` wait for the next prune.
        for after in range(0, last, batch):
            with db.read() as session:
                chosen = list(session.scalars(
                    select(Run).where(Run.pk > after, Run.pk <= after + batch,
                                      Run.status.in_([s.value for s in tallies.SETTLED]),
                                      Run.finished_at < before, Run.archive.is_(None))
                    .order_by(Run.pk)))
                if not chosen:
                    continue
                ids = [r.id for r in chosen]
                id_of = {r.pk: r.id for r in chosen}
                by_run: dict[str, dict[str, list[dict[str, Any]]]] = {i: {"steps": [], "events": []} for i in ids}
                for step in session.scalars(select(RunStep).where(RunStep.run_pk.in_(id_of))
                                            .order_by(RunStep.run_pk, *RUN_STEPS_IN_ORDER)):
                    by_run[id_of[step.run_pk]]["steps"].append(_step_row(step, id_of[step.run_pk]))
                for event in session.scalars(select(Event).where(Event.run_pk.in_(id_of)).order_by(Event.seq)):
                    by_run[id_of[event.run_pk]]["events"].append(_event_row(event))
                # the archive is read on its own: each result whole, with its request (aurora.run_results)
                results = run_results.full_many(session, [(r.id, r.result) for r in chosen])
            # a run whose events the tallies have not seen yet (it settled meanwhile) waits
            chosen = [r for r in chosen if max((e["seq"] for e in by_run[r.id]["events"]), default=0) <= counted]
            ids = [r.id for r in chosen]
            if not ids:
                continue
            for run in chosen:
                out.write(json.dumps({"run": {**_row(run), "result": results[run.id]}, **by_run[run.id]},
                                     sort_keys=True).encode() + b"\n")
            # on disk before anything is removed: a crash leaves a run archived twice, never lost
            out.flush()
            raw.flush()
            os.fsync(raw.fileno())
            with db.write() as session:
                steps += session.execute(delete(RunStep).where(RunStep.run_pk.in_([r.pk for r in chosen]))).rowcount
                events += session.execute(delete(Event).where(Event.run_pk.in_([r.pk for r in chosen]))).rowcount
                runs += session.execute(update(Run).where(Run.id.in_(ids), Run.archive.is_(None)).values(
                    document={"payload": {}, "archived": True}, archive=str(path))).rowcount
    if not runs:
        path.unlink()
    return {"runs": runs, "steps": steps, "events": events, "archive": str(path) if runs else None}


def _marks(db: Database) -> tuple[int, ...]:
    from .models import MetricTally

    with db.read() as session:
        return tuple(t.count for t in session.scalars(
            select(MetricTally).where(MetricTally.labels == "").order_by(MetricTally.name)))


def read_archive(path: Path, run_id: str) -> dict[str, Any] | None:
    """One run's archived document, steps and events, or None if the file does not hold it."""
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            item = json.loads(line)
            if item["run"]["id"] == run_id:
                return item
    return None

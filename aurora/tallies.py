"""Counts for /metrics that do not grow with history: tallies advanced from the append-only logs.

Counting every run and every audit record at each scrape (``count(*) ... GROUP BY``) takes time
in proportion to all history. Instead, ``metric_tallies`` keeps:

- runs in a settled status (succeeded, failed, rejected, expired, cancelled, not_acted) by goal,
  advanced over the event log: each run's settling event (``run.<status>``) is appended once, and
  events become visible in ``seq`` order (aurora/events.py), so a high-water mark on ``seq``
  counts each exactly once. A ``needs_reconciliation`` run may still settle (a provider's webhook,
  whose event carries ``reconciled_by``): it is counted live, like the statuses of runs in flight.
- adapter calls by adapter, mode and outcome, advanced over the audit chain by ``pk`` (appended
  in ``pk`` order under the audit lock).

Runs in flight (queued, running, awaiting approval, needs reconciliation) are counted live through
the status index: their number is the work at hand, not the history. Advancing is a
compare-and-set on the high-water marks, so two scrapes at once never count anything twice.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import func, select, update

from .db import Database
from .models import AuditRecord, Event, MetricTally, Run, RunStatus

SETTLED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.REJECTED, RunStatus.EXPIRED, RunStatus.CANCELLED,
           RunStatus.NOT_ACTED)
LIVE = tuple(s.value for s in RunStatus if s not in SETTLED)
_SETTLING = tuple(f"run.{s.value}" for s in SETTLED)
#: the most log rows one advance reads (the rest is taken by the next scrape)
BATCH = 50_000


def advance(db: Database, node: str) -> None:
    """Add what was appended since the last advance; a no-op when another one is doing it. Only
    ``node``'s own events settle its runs: a peer's ``run.succeeded`` carrying a local run's id is
    that peer's event (docs/federation.md), and must not count the local run as settled."""
    with db.read() as session:
        marks = {t.name: t.count for t in session.scalars(select(MetricTally).where(MetricTally.labels == ""))}
        seq, pk = marks.get("_seq", 0), marks.get("_audit", 0)
        top_seq = min(session.scalar(select(func.max(Event.seq))) or 0, seq + BATCH)
        top_pk = min(session.scalar(select(func.max(AuditRecord.pk))) or 0, pk + BATCH)
        if top_seq <= seq and top_pk <= pk:
            return
        runs: Counter[str] = Counter()
        for goal, type_ in session.execute(
                select(Run.goal, Event.type).join(Run, Run.pk == Event.run_pk)
                .where(Event.seq > seq, Event.seq <= top_seq, Event.type.in_(_SETTLING))):
            runs[f"{goal}\t{type_.removeprefix('run.')}"] += 1
        calls: Counter[str] = Counter()
        for adapter, mode, outcome, count in session.execute(
                select(AuditRecord.adapter, AuditRecord.mode, AuditRecord.outcome, func.count())
                .where(AuditRecord.pk > pk, AuditRecord.pk <= top_pk, AuditRecord.mode != "ledger")
                .group_by(AuditRecord.adapter, AuditRecord.mode, AuditRecord.outcome)):
            calls[f"{adapter}\t{mode}\t{outcome}"] += count
    try:
        with db.write() as session:
            for name, old, new in (("_seq", seq, top_seq), ("_audit", pk, top_pk)):
                moved = session.execute(update(MetricTally).where(
                    MetricTally.name == name, MetricTally.labels == "", MetricTally.count == old)
                    .values(count=new)).rowcount
                if not moved:
                    if name in marks:
                        raise _Taken
                    session.add(MetricTally(name=name, labels="", count=new))
            for name, counts in (("runs", runs), ("calls", calls)):
                for labels, count in counts.items():
                    row = session.get(MetricTally, (name, labels))
                    if row is None:
                        session.add(MetricTally(name=name, labels=labels, count=count))
                    else:
                        row.count += count
    except _Taken:
        pass  # another advance took this range (rolled back here): it counts it


class _Taken(Exception):
    pass


def read(db: Database, node: str) -> tuple[list[tuple[str, str, int]], list[tuple[str, str, str, int]]]:
    """(runs by goal and status, adapter calls by adapter, mode and outcome), as of now."""
    advance(db, node)
    with db.read() as session:
        tallies = list(session.scalars(select(MetricTally).where(MetricTally.labels != "")))
        live = session.execute(select(Run.goal, Run.status, func.count()).where(Run.status.in_(LIVE))
                               .group_by(Run.goal, Run.status)).all()
    runs: list[Any] = [(*t.labels.split("\t"), t.count) for t in tallies if t.name == "runs"]
    runs += [(goal, status, count) for goal, status, count in live]
    calls = [(*t.labels.split("\t"), t.count) for t in tallies if t.name == "calls"]
    return runs, calls

"""Each adapter's rollout, kept in the database so every process agrees.

An adapter that goes live starts in its canary (``security.canary_percent`` of runs live) until
``aurora adapters promote NAME``. A live call that fails for good, with
``security.auto_rollback_on_failure``, rolls it back to simulated until ``aurora adapters enable
NAME`` (which starts a new canary).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import audit, events
from .db import Database
from .models import AdapterState, utcnow

_ALL = select(AdapterState.__table__)
#: every adapter Aurora has
ADAPTERS = ("stripe", "mailgun", "typeform", "social", "engine")


@dataclass(frozen=True)
class Rollout:
    name: str
    promoted: bool = False
    rolled_back_at: datetime | None = None
    rollback_reason: str | None = None

    @property
    def rolled_back(self) -> bool:
        return self.rolled_back_at is not None


def load(db: Database) -> dict[str, Rollout]:
    with db.read() as session:
        return load_in(session)


def load_in(session: Session) -> dict[str, Rollout]:
    """Every adapter's rollout, read in the caller's transaction."""
    found = {r.name: Rollout(r.name, r.promoted, r.rolled_back_at, r.rollback_reason)
             for r in session.connection().execute(_ALL)}
    return {name: found.get(name, Rollout(name)) for name in ADAPTERS}


class Rollouts(Mapping[str, Rollout]):
    """Every adapter's rollout, read in the caller's transaction when first asked for.

    Most calls are decided before the rollout matters (dry run, allow flag off, no secrets), and
    the run path should not pay for a query it does not need.
    """

    def __init__(self, session: Session):
        self._session = session
        self._loaded: dict[str, Rollout] | None = None

    def _all(self) -> dict[str, Rollout]:
        if self._loaded is None:
            self._loaded = load_in(self._session)
        return self._loaded

    def __getitem__(self, name: str) -> Rollout:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


def _row(session: Session, name: str) -> AdapterState:
    row = session.get(AdapterState, name)
    if row is None:
        row = AdapterState(name=name, promoted=False, updated_at=utcnow())
        session.add(row)
    return row


def promote(db: Database, name: str, node: str, by: str = "cli") -> None:
    with db.write() as session:
        row = _row(session, name)
        row.promoted, row.updated_at = True, utcnow()
        events.append(db, session, node, "adapter.promoted", {"adapter": name, "by": by})
        audit.note(db, session, name, "promote", {"adapter": name, "by": by})


def enable(db: Database, name: str, node: str, by: str = "cli") -> None:
    """Clear a rollback; the adapter goes back into its canary."""
    with db.write() as session:
        row = _row(session, name)
        row.rolled_back_at, row.rollback_reason, row.promoted, row.updated_at = None, None, False, utcnow()
        events.append(db, session, node, "adapter.enabled", {"adapter": name, "by": by})
        audit.note(db, session, name, "enable", {"adapter": name, "by": by})


def roll_back(db: Database, session: Session, name: str, node: str, reason: str, run_id: str | None) -> None:
    """Switch an adapter back to simulated, in the caller's transaction, with an event and an audit record."""
    row = _row(session, name)
    if row.rolled_back_at is not None:
        return
    row.rolled_back_at, row.rollback_reason, row.updated_at = utcnow(), reason[:255], utcnow()
    events.append(db, session, node, "adapter.rolled_back", {"adapter": name, "reason": reason[:255]}, run_id=run_id)
    audit.append(db, session, run_id=run_id, adapter=name, operation="rollback", mode="simulated",
                 reason="auto rollback after a live failure", request={}, outcome="ok",
                 response={"reason": reason[:255]}, duration_ms=0.0)

"""Which AI engines are cooling down: failures counted in the database, shared by all processes.

After ``failures_before_cooldown`` failures in a row an engine rests for ``cooldown_seconds``;
one success resets its count.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from .db import Database
from .models import EngineHealth, utcnow


class HealthStore:
    def __init__(self, db: Database, failures_before_cooldown: int = 3, cooldown_seconds: float = 300):
        self.db = db
        self.threshold = failures_before_cooldown
        self.cooldown = timedelta(seconds=cooldown_seconds)

    def cooling_until(self, engine: str) -> datetime | None:
        with self.db.read() as session:
            until = session.scalar(select(EngineHealth.cooldown_until).where(EngineHealth.engine == engine))
        return until if until is not None and until > utcnow() else None

    def failure(self, engine: str, error: str) -> bool:
        """Count a failure; return True if the engine now cools down."""
        now = utcnow()
        for _ in range(2):  # a concurrent first insert loses the race once, then updates
            try:
                with self.db.write() as session:
                    row = session.scalar(select(EngineHealth).where(EngineHealth.engine == engine))
                    if row is None:
                        row = EngineHealth(engine=engine, failures=0, updated_at=now)
                        session.add(row)
                    row.failures += 1
                    row.last_error = error[:255]
                    row.updated_at = now
                    if row.failures >= self.threshold:
                        row.cooldown_until = now + self.cooldown
                        row.failures = 0
                        return True
                    return False
            except IntegrityError:
                continue
        return False

    def success(self, engine: str) -> None:
        with self.db.write() as session:
            session.execute(update(EngineHealth).where(EngineHealth.engine == engine, EngineHealth.failures > 0)
                            .values(failures=0, updated_at=utcnow()))

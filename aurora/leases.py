"""Keep the leases of the runs this process works on alive: one thread per process renews them
all, every third of the lease, in one transaction (not one thread per run)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from .models import Run, utcnow

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self, db: Any, lease_seconds: float):
        self.db = db
        self.lease = timedelta(seconds=lease_seconds)
        self.period = lease_seconds / 3
        self._held: dict[str, str] = {}
        self._lock = threading.Lock()
        self._pid = 0

    @contextmanager
    def hold(self, run_id: str, owner: str) -> Iterator[None]:
        with self._lock:
            if self._pid != os.getpid():  # a forked child needs its own thread
                self._pid = os.getpid()
                threading.Thread(target=self._renew_forever, name="lease-keeper", daemon=True).start()
            self._held[run_id] = owner
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(run_id, None)

    def _renew_forever(self) -> None:
        stop = threading.Event()
        while not stop.wait(self.period):
            with self._lock:
                held = dict(self._held)
            if not held:
                continue
            until = utcnow() + self.lease
            try:
                with self.db.write() as session:
                    for run_id, owner in held.items():
                        session.execute(update(Run).where(Run.id == run_id, Run.lease_owner == owner)
                                        .values(lease_expires_at=until))
            except Exception:  # noqa: BLE001 - a missed renewal only shortens the lease
                log.warning("could not renew %d lease(s)", len(held), exc_info=True)

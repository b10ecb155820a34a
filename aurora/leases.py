"""Keep the leases of the runs this process works on alive: one thread per process renews them
all, every third of the lease, in one transaction (not one thread per run)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from .dbclock import db_now
from .models import RunStatus
from .run_sql import RENEW, RUNS

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self, db: Any, lease_seconds: float):
        self.db = db
        self.lease_seconds = float(lease_seconds)
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
            try:
                # The new expiry is the database's time plus the lease (aurora/dbclock.py): this
                # process's clock never decides how long another worker must wait.
                with self.db.write_rows() as connection:
                    connection.execute(RENEW, [{"rid": run_id, "owner": owner, "lease": self.lease_seconds}
                                               for run_id, owner in held.items()])
            except Exception:  # noqa: BLE001 - a missed renewal only shortens the lease
                log.warning("could not renew %d lease(s)", len(held), exc_info=True)


@dataclass(frozen=True)
class ActLease:
    """The grant a worker hands its adapter call (``CallContext.grant``): a live call is made only
    while the run is in its act phase under this owner's unexpired lease, by the database's clock
    (``Adapter.call`` asks :meth:`refusal` right before it sends)."""

    db: Any
    owner: str

    def refusal(self, run_id: str | None) -> str | None:
        """None if ``run_id`` may act live now; otherwise why not."""
        with self.db.read_rows() as connection:
            row = connection.execute(select(
                RUNS.c.status, RUNS.c.step, RUNS.c.lease_owner, RUNS.c.lease_expires_at > db_now(),
            ).where(RUNS.c.id == run_id)).one_or_none()
        if row is None:
            return f"there is no run {run_id!r}"
        status, step, owner, unexpired = row
        if status != RunStatus.RUNNING.value or step != "act":
            return f"run {run_id} is not in its act phase (it is {status}, step {step})"
        if owner != self.owner or not unexpired:
            return f"run {run_id} is not under this worker's lease (it lapsed or another worker took it)"
        return None

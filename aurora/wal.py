"""SQLite WAL checkpoints, off the writers' path.

By default SQLite checkpoints inside the COMMIT that pushes the WAL past 1,000 pages: that commit
copies the pages back into the database file and waits for two fsyncs, while the writer still
holds Aurora's writer lock (``db.WriterLock``). Measured on a run-executing worker: one commit in
about forty took 20–50 ms instead of 2, and every other writer — the other worker processes, the
web's submissions — waited for it; a sixth of the engine's time went there.

So each process that writes counts its write transactions and, every ``EVERY_COMMITS`` of them,
wakes a background thread that runs ``PRAGMA wal_checkpoint(PASSIVE)`` on a connection of its own:
a passive checkpoint needs no writer lock, never blocks readers or writers, and copies what no
reader still needs. SQLite's own automatic checkpoint stays as a backstop at ``BACKSTOP_PAGES``, for
processes that write without a checkpointer (a short CLI command) or if the thread falls behind.
"""

from __future__ import annotations

import logging
import os
import threading

from sqlalchemy import Engine

log = logging.getLogger(__name__)

#: WAL pages after which a committing writer checkpoints by itself (SQLite's default is 1,000)
BACKSTOP_PAGES = 10_000
#: write transactions of one process between two background checkpoints (~20 pages each for a run)
EVERY_COMMITS = 48


class Checkpointer:
    """Checkpoints one SQLite database from a background thread of the current process."""

    def __init__(self, engine: Engine, every: int = EVERY_COMMITS):
        self.engine = engine
        self.every = every
        self.completed = 0
        self._commits = 0
        self._pid = 0
        self._wake = threading.Event()
        self._start_lock = threading.Lock()

    def committed(self) -> None:
        """Count a write transaction that has committed and released the writer lock."""
        self._commits += 1  # a lost increment between threads only delays a checkpoint a little
        if self._commits >= self.every:
            self._commits = 0
            self._ensure_thread()
            self._wake.set()

    def checkpoint(self) -> tuple[int, int, int]:
        """One passive checkpoint: (busy, pages in the WAL, pages copied back)."""
        connection = self.engine.raw_connection()  # autocommit: a checkpoint must not run inside a transaction
        try:
            cursor = connection.cursor()
            busy, wal_pages, copied = cursor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            cursor.close()
        finally:
            connection.close()
        self.completed += 1
        return busy, wal_pages, copied

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid():
            return
        with self._start_lock:
            if self._pid != os.getpid():  # a forked child has the parent's object but not its thread
                self._wake = threading.Event()
                threading.Thread(target=self._loop, name="sqlite-checkpoint", daemon=True).start()
                self._pid = os.getpid()

    def _loop(self) -> None:
        wake = self._wake
        while True:
            wake.wait()
            wake.clear()
            try:
                self.checkpoint()
            except Exception:  # noqa: BLE001 - SQLite's backstop checkpoint still bounds the WAL
                log.warning("background WAL checkpoint failed", exc_info=True)


_CHECKPOINTERS: dict[str, Checkpointer] = {}
_registry_lock = threading.Lock()


def checkpointer_for(engine: Engine) -> Checkpointer:
    """One checkpointer (and at most one thread) per database per process."""
    key = str(engine.url)
    with _registry_lock:
        if key not in _CHECKPOINTERS:
            _CHECKPOINTERS[key] = Checkpointer(engine)
        return _CHECKPOINTERS[key]

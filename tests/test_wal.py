"""SQLite WAL checkpoints run in a background thread, without the writer lock."""

from __future__ import annotations

import time

from conftest import ROOT
from sqlalchemy import text

from aurora import documents, wal


def _submit(runtime, count: int) -> None:  # type: ignore[no-untyped-def]
    workflow = documents.load((ROOT / "workflows" / "send_report.yaml").read_bytes())
    for _ in range(count):
        runtime.engine.submit(workflow, "tester")


def test_sqlite_connections_keep_only_a_backstop_automatic_checkpoint(runtime) -> None:
    with runtime.db.read_rows() as connection:
        assert connection.execute(text("PRAGMA wal_autocheckpoint")).scalar() == wal.BACKSTOP_PAGES


def test_a_checkpoint_runs_while_another_writer_holds_the_lock(runtime) -> None:
    checkpointer = runtime.db.checkpointer
    before = checkpointer.completed
    _submit(runtime, checkpointer.every)
    with runtime.db._write_lock.hold():  # another writer's transaction in progress
        deadline = time.monotonic() + 10
        while checkpointer.completed == before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert checkpointer.completed > before
    busy, wal_pages, copied = checkpointer.checkpoint()
    assert busy == 0 and wal_pages > 0 and copied == wal_pages  # everything committed is in the file


def test_fewer_commits_wake_no_checkpoint(runtime) -> None:
    checkpointer = runtime.db.checkpointer
    checkpointer._commits = 0
    before = checkpointer.completed
    _submit(runtime, checkpointer.every - 1)
    time.sleep(0.2)
    assert checkpointer.completed == before

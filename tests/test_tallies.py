"""/metrics counts from tallies: taken once by migration 0013_scale from what is stored, then advanced
from the logs, never twice for one run — not by two scrapes at once either."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from aurora import documents, tallies
from aurora.config import load_settings
from aurora.migrations import upgrade
from aurora.runtime import Runtime

MAIL = "name: mail\ngoal: send_email\npayload: {to: a@example.com, subject: Hi, text: Hallo}\n"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, env) -> str:
    return request.getfixturevalue("postgres_url") if request.param == "postgresql" else env["AURORA_DATABASE_URL"]


def test_migration_takes_the_first_tallies_from_what_is_stored(env, url) -> None:
    upgrade(url, "0008")
    runtime = Runtime(load_settings({**env, "AURORA_DATABASE_URL": url}))
    with runtime.db.engine.begin() as conn:  # two runs stored by the version before 0013_scale
        for pk, status in ((1, "succeeded"), (2, "queued")):
            conn.execute(text(
                "INSERT INTO runs (pk, id, name, goal, document, document_hash, status, approvals_required, "
                "submitted_by, attempts, created_at, updated_at) VALUES (:pk, :id, 'mail', 'send_email', '{}', "
                "'h', :status, 0, 'sam', 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"),
                {"pk": pk, "id": f"00000000-0000-4000-8000-00000000000{pk}", "status": status})
        conn.execute(text(
            "INSERT INTO audit_records (created_at, run_id, adapter, operation, mode, reason, request, outcome, "
            "duration_ms, prev_hash, hash) VALUES ('2026-01-01 00:00:00', NULL, 'mailgun', 'send', 'simulated', "
            "'', '{}', 'ok', 0, 'p', 'h1')"))
    upgrade(url)
    runs, calls = tallies.read(runtime.db, runtime.settings.node_name)
    assert sorted(runs) == [("send_email", "queued", 1), ("send_email", "succeeded", 1)]
    assert calls == [("mailgun", "simulated", "ok", 1)]


def test_concurrent_scrapes_count_each_run_once(env, url) -> None:
    upgrade(url)
    runtime = Runtime(load_settings({**env, "AURORA_DATABASE_URL": url}))
    engine, workflow = runtime.engine, documents.load(MAIL)
    for _ in range(12):
        assert engine.execute(engine.submit(workflow, "sam").id).status == "succeeded"
    waiting = engine.submit(workflow, "sam")
    errors: list[BaseException] = []

    def scrape() -> None:
        try:
            tallies.advance(runtime.db, runtime.settings.node_name)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=scrape) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    runs, calls = tallies.read(runtime.db, runtime.settings.node_name)
    assert sorted(runs) == [("send_email", "queued", 1), ("send_email", "succeeded", 12)]
    assert calls == [("mailgun", "simulated", "ok", 12)]
    assert engine.execute(waiting.id).status == "succeeded"  # it moves from the live count to the tally
    assert sorted(tallies.read(runtime.db, runtime.settings.node_name)[0]) == [("send_email", "succeeded", 13)]

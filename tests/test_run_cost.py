"""The run path on PostgreSQL stays as short as it was made (docs/scaling.md): its statements,
one statement for both outbox locks, no ping of a connection that was just used — and a
connection that died while idle is still replaced without an error."""

from __future__ import annotations

import time
from collections import Counter

import psycopg
from sqlalchemy import event, text

from aurora import db as aurora_db
from aurora import documents
from aurora.config import load_settings
from aurora.migrations import upgrade
from aurora.runtime import Runtime

MAIL = "name: mail\ngoal: send_email\npayload: {to: a@example.com, subject: Hi, text: Hallo}\n"


def _engine(env, postgres_url):
    runtime = Runtime(load_settings({**env, "AURORA_DATABASE_URL": postgres_url}))
    upgrade(postgres_url)
    return runtime.engine


def test_a_dry_run_on_postgresql_is_seven_statements_one_commit_and_no_ping(env, postgres_url) -> None:
    engine = _engine(env, postgres_url)
    workflow = documents.load(MAIL)
    for _ in range(6):  # warm: the audit key, the pool, psycopg's prepared statements
        engine.execute(engine.submit(workflow, "sam").id)
    runs = [engine.submit(workflow, "sam").id for _ in range(5)]
    sent: Counter[str] = Counter()
    commits, pings = [0], [0]
    ping = engine.db.engine.dialect.do_ping

    def counting_ping(dbapi_connection):
        pings[0] += 1
        return ping(dbapi_connection)

    def on_execute(_conn, _cursor, statement, *_args):
        sent[" ".join(statement.split()[:3])] += 1

    def on_commit(_conn):
        commits[0] += 1

    engine.db.engine.dialect.do_ping = counting_ping
    event.listen(engine.db.engine, "before_cursor_execute", on_execute)
    event.listen(engine.db.engine, "commit", on_commit)
    try:
        for run_id in runs:
            assert engine.execute(run_id).status == "succeeded"
    finally:
        event.remove(engine.db.engine, "before_cursor_execute", on_execute)
        event.remove(engine.db.engine, "commit", on_commit)
        engine.db.engine.dialect.do_ping = ping
    assert sum(sent.values()) == 7 * len(runs), sent
    assert sent["SELECT pg_advisory_xact_lock(%(k0)s), pg_advisory_xact_lock(%(k1)s)"] == len(runs), sent
    assert sent["INSERT INTO events"] == sent["INSERT INTO run_steps"] == len(runs), sent  # one statement each
    assert commits[0] == len(runs)
    assert pings[0] == 0  # the pool's connections were in use a moment ago


def test_a_connection_that_died_while_idle_is_replaced_without_an_error(env, postgres_url, monkeypatch) -> None:
    monkeypatch.setattr(aurora_db, "PG_PING_AFTER_IDLE", 0.2)
    engine = _engine(env, postgres_url)
    with engine.db.engine.connect() as conn:
        backend = conn.execute(text("SELECT pg_backend_pid()")).scalar()
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
    time.sleep(0.3)
    with engine.db.engine.connect() as conn:  # pinged, found dead, replaced
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar() != backend
    run = engine.submit(documents.load(MAIL), "sam")
    assert engine.execute(run.id).status == "succeeded"

"""The run path on PostgreSQL stays as short as it was made (docs/scaling.md): its round trips
(counted on the wire), its statements, the outbox locks taken by the run's UPDATE, no ping of a
connection that was just used — and a connection that died while idle is still replaced without
an error."""

from __future__ import annotations

import time
from collections import Counter

import psycopg
from pgproxy import proxy_for
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


def _warm(engine, workflow) -> None:
    for _ in range(8):  # the audit key, the pool, psycopg's prepared statements (from the 5th use)
        engine.execute(engine.submit(workflow, "sam").id)


def test_a_dry_run_on_postgresql_is_five_round_trips(env, postgres_url) -> None:
    """Read the fresh run; BEGIN; the UPDATE, which takes the outbox locks; the chain's head with
    the next audit key; the audit, steps and events INSERTs with the COMMIT, in one pipeline."""
    upgrade(postgres_url)
    with proxy_for(postgres_url) as proxy:
        url = proxy.url(postgres_url)
        try:
            engine = Runtime(load_settings({**env, "AURORA_DATABASE_URL": url})).engine
            workflow = documents.load(MAIL)
            _warm(engine, workflow)
            runs = [engine.submit(workflow, "sam").id for _ in range(5)]
            before = proxy.turns
            for run_id in runs:
                assert engine.execute(run_id).status == "succeeded"
            assert (proxy.turns - before) / len(runs) == 5, proxy.turns - before
        finally:
            aurora_db.forget(url)


def test_a_dry_run_on_postgresql_is_six_statements_one_commit_and_no_ping(env, postgres_url) -> None:
    engine = _engine(env, postgres_url)
    workflow = documents.load(MAIL)
    _warm(engine, workflow)
    runs = [engine.submit(workflow, "sam").id for _ in range(5)]
    sent: Counter[str] = Counter()
    locking: list[str] = []
    commits, pings = [0], [0]
    ping = engine.db.engine.dialect.do_ping

    def counting_ping(dbapi_connection):
        pings[0] += 1
        return ping(dbapi_connection)

    def on_execute(_conn, _cursor, statement, *_args):
        sent[" ".join(statement.split()[:3])] += 1
        if "pg_advisory_xact_lock" in statement:
            locking.append(statement.split()[0])

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
    # the COMMIT goes to psycopg's pipeline directly: not one of these
    assert sum(sent.values()) == 6 * len(runs), sent
    assert locking == ["UPDATE"] * len(runs), sent  # both locks in the run's own UPDATE
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

"""PostgreSQL outages that are not a stopped server: a frozen one (it accepts packets and answers
nothing) and a read-only one (a failover to a standby). Both are a 503 naming the database, soon,
never a hang or a 500; and the timeouts that bound them never cut a migration."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import psycopg
import pytest
from conftest import descendants
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from test_unavailable import MAIL, _runtime_on, private_postgres

from aurora import db as aurora_db
from aurora import keys
from aurora.models import Role
from aurora.runtime import set_runtime
from aurora.web.unavailable import component_of


def _signal(pid: int, number: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # a backend that was just ending (our admin's)
        os.kill(pid, number)


def _client_with_a_pooled_connection(env, url: str):
    from aurora.web import create_app

    runtime = _runtime_on(env, url)
    key = keys.create(runtime.db, "sam", Role.SUBMITTER)
    client = create_app({"TESTING": True}).test_client()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/yaml"}
    created = client.post("/workflows", data=MAIL, headers=headers)
    assert created.status_code == 201, created.json  # the pool now holds a connection
    return runtime, client, headers


@pytest.mark.timeout(90)  # without a client deadline this request would never be answered
def test_a_frozen_postgresql_is_a_503_within_seconds(env) -> None:
    with private_postgres() as (url, _stop):
        frozen: list[int] = []
        try:
            runtime, client, headers = _client_with_a_pooled_connection(env, url)
            held = runtime.db.engine.connect()  # a worker's connection, checked out before the freeze
            held.execute(text("SELECT 1"))
            with psycopg.connect(url, autocommit=True) as admin:
                data_dir = admin.execute("SHOW data_directory").fetchone()[0]
            postmaster = int((Path(data_dir) / "postmaster.pid").read_text().split()[0])
            frozen = [postmaster, *descendants(postmaster)]
            for pid in frozen:  # the kernel still accepts and acknowledges; no process answers
                _signal(pid, signal.SIGSTOP)
            started = time.monotonic()
            with pytest.raises(sa_exc.OperationalError) as cut:  # mid-transaction: the statement deadline
                held.execute(text("SELECT 1"))
            assert component_of(cut.value) == "database"
            assert time.monotonic() - started < aurora_db.PG_STATEMENT_TIMEOUT_MS / 1000 + 5
            held.close()
            started = time.monotonic()  # a request: the pool's pre-ping, then a connect that times out
            response = client.post("/workflows", data=MAIL, headers=headers)
            took = time.monotonic() - started
            assert response.status_code == 503, response.json
            assert response.json["component"] == "database" and int(response.headers["Retry-After"]) > 0
            assert took < 15, took
        finally:
            for pid in frozen:
                _signal(pid, signal.SIGCONT)
            set_runtime(None)
            aurora_db.forget(url)


def test_a_read_only_postgresql_is_a_503_not_a_500(env) -> None:
    with private_postgres() as (url, _stop):
        try:
            _runtime, client, headers = _client_with_a_pooled_connection(env, url)
            with psycopg.connect(url, autocommit=True) as admin:  # as a promoted standby's old primary is
                admin.execute("ALTER DATABASE postgres SET default_transaction_read_only = on")
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = 'postgres' AND pid <> pg_backend_pid()")
            response = client.post("/workflows", data=MAIL, headers=headers)
            assert response.status_code == 503, response.json
            assert response.json["error"] == "unavailable" and response.json["component"] == "database"
            assert "read-only" not in response.get_data(as_text=True)  # no driver text
        finally:
            set_runtime(None)
            aurora_db.forget(url)


@pytest.mark.parametrize("sqlstate", ["25006", "57P01", "57P02", "57P03", "53300", "08006", "08001", "08P01"])
def test_sqlstates_of_an_unavailable_server_are_the_database(sqlstate: str) -> None:
    error = psycopg.errors.lookup(sqlstate)("server message")
    # psycopg's class for each, as SQLAlchemy wraps it (25006 is an InternalError, not Operational)
    wrapped = sa_exc.DBAPIError.instance("INSERT ...", {}, error, psycopg.Error)
    assert component_of(wrapped) == "database" and component_of(error) == "database"


@pytest.mark.parametrize("sqlstate", ["42P01", "23505", "22P02"])
def test_sqlstates_of_a_bug_are_not_an_outage(sqlstate: str) -> None:
    error = psycopg.errors.lookup(sqlstate)("server message")
    assert component_of(sa_exc.DBAPIError.instance("SELECT ...", {}, error, psycopg.Error)) is None


def test_postgresql_connections_carry_keepalives_and_a_statement_timeout(postgres_url, monkeypatch) -> None:
    monkeypatch.setattr(aurora_db, "PG_STATEMENT_TIMEOUT_MS", 300)
    aurora_db.forget(postgres_url)
    database = aurora_db.Database(postgres_url)
    with database.engine.connect() as connection:
        assert connection.execute(text("SHOW statement_timeout")).scalar() == "300ms"
        info = connection.connection.dbapi_connection.info
        params = info.get_parameters()
        assert params["keepalives"] == "1" and params["tcp_user_timeout"] == "10000"
        with pytest.raises(sa_exc.OperationalError) as cancelled:
            connection.execute(text("SELECT pg_sleep(2)"))
        assert component_of(cancelled.value) == "database"  # 57014: answered 503, not 500
    # migrations run without it: an index on a big table may take minutes
    with aurora_db.migration_engine(postgres_url) as engine, engine.connect() as connection:
        assert connection.execute(text("SHOW statement_timeout")).scalar() == "0"
        connection.execute(text("SELECT pg_sleep(0.5)"))
    aurora_db.forget(postgres_url)


def test_the_url_keeps_its_own_settings(monkeypatch) -> None:
    from sqlalchemy.engine import make_url

    query = make_url("postgresql://h/db?keepalives_idle=60&options=-c%20statement_timeout%3D0").query
    args = aurora_db.pg_connect_args(query)
    assert "keepalives_idle" not in args and "options" not in args and args["tcp_user_timeout"] == 10_000
    assert aurora_db.statement_timeout_ms("-c statement_timeout=0") == 0
    assert aurora_db.statement_timeout_ms("-c statement_timeout=5s") == 5000
    assert aurora_db.statement_timeout_ms("-c statement_timeout=2500") == 2500


def test_a_transaction_holding_the_outbox_locks_may_not_idle_for_long(postgres_url) -> None:
    """PostgreSQL ends a transaction that holds the outbox locks and then says nothing for
    PG_LOCKED_IDLE_MS (a frozen process must not stop every writer: tests/test_stack.py); only
    that transaction: the session's own setting is left as it was. (The settling UPDATE's
    locks: tests/test_batch.py.)"""
    database = aurora_db.Database(postgres_url)
    limit = f"{aurora_db.PG_LOCKED_IDLE_MS // 1000}s"
    with database.engine.connect() as connection:
        with connection.begin():
            assert connection.execute(text("SHOW idle_in_transaction_session_timeout")).scalar() == "0"
            database.lock(connection, *aurora_db.OUTBOX_LOCKS)
            assert connection.execute(text("SHOW idle_in_transaction_session_timeout")).scalar() == limit
        assert connection.execute(text("SHOW idle_in_transaction_session_timeout")).scalar() == "0"
    aurora_db.forget(postgres_url)


def test_the_sweeper_ends_a_silent_holder_of_the_outbox_locks_but_not_a_patient_one(postgres_url, monkeypatch) -> None:
    """aurora/frozen_holders.py: a transaction that holds the outbox locks and has said nothing
    for the limit is ended; one that said it may be silent (``aurora audit reseal``) is not."""
    from aurora import frozen_holders

    monkeypatch.setattr(frozen_holders, "PG_LOCKED_IDLE_MS", 300)
    database = aurora_db.Database(postgres_url)
    patient, silent = database.engine.connect(), database.engine.connect()
    try:
        patient.begin()
        database.lock(patient, *aurora_db.OUTBOX_LOCKS)
        frozen_holders.be_patient(database, patient)
        pid = patient.execute(text("SELECT pg_backend_pid()")).scalar()
        time.sleep(0.6)
        assert frozen_holders.end_frozen_holders(database) == []
        patient.rollback()  # the locks are free for the next one
        silent.begin()
        database.lock(silent, *aurora_db.OUTBOX_LOCKS)
        pid = silent.execute(text("SELECT pg_backend_pid()")).scalar()
        time.sleep(0.6)
        assert frozen_holders.end_frozen_holders(database) == [pid]
        with pytest.raises(sa_exc.DBAPIError):
            silent.execute(text("SELECT 1"))
    finally:
        for connection in (patient, silent):
            connection.invalidate()
            connection.close()
        aurora_db.forget(postgres_url)

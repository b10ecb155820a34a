"""``Database.batch``: statements sent together (a psycopg pipeline on PostgreSQL), a transaction
that ends with the block and a connection nothing can use after it; ``change_then_lock``; and the
client's deadline still bounds a pipeline whose server stopped answering."""

from __future__ import annotations

import time
import uuid

import pytest
from pgproxy import proxy_for
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select, text

from aurora import db as aurora_db
from aurora.config import load_settings
from aurora.db import OUTBOX_LOCKS, Database
from aurora.migrations import upgrade
from aurora.models import Event, utcnow
from aurora.runtime import Runtime
from aurora.web.unavailable import component_of

INSERT = Event.__table__.insert().inline()  # no RETURNING of the new seq: nothing read back


@pytest.fixture
def db(each_db) -> Database:
    return each_db.db


def _event(type_: str = "t") -> dict:
    return {"id": str(uuid.uuid4()), "origin": "here", "type": type_, "run_id": None, "data": {},
            "created_at": utcnow()}


def _events(db: Database) -> int:
    with db.read() as session:
        return session.scalar(select(func.count()).select_from(Event))


def test_a_batch_commits_with_its_block_and_its_connection_is_closed_after_it(db: Database) -> None:
    with db.write_rows() as connection:
        with db.batch(connection, commit=True):
            connection.execute(INSERT, _event())
            connection.execute(INSERT, [_event(), _event()])
        assert _events(db) == 3  # committed when the block ended, before the write's own end
        # Nothing may follow the commit: it would begin a transaction nobody commits. (Closed; in
        # a write, SQLAlchemy's context manager of the transaction refuses it as well.)
        with pytest.raises(sa_exc.InvalidRequestError):
            connection.execute(text("SELECT 1"))
    assert _events(db) == 3
    with db.engine.connect() as connection:  # no context manager of SQLAlchemy's guards this one
        with db.batch(connection, commit=True):
            connection.execute(INSERT, _event())
        with pytest.raises(sa_exc.ResourceClosedError):
            connection.execute(INSERT, _event())  # would begin a transaction the pool rolls back
    assert _events(db) == 4


def test_a_batch_without_commit_leaves_the_transaction_to_its_write(db: Database) -> None:
    with db.write_rows() as connection:
        with db.batch(connection):
            connection.execute(INSERT, _event())
        connection.execute(INSERT, _event())
        assert connection.execute(select(func.count()).select_from(Event)).scalar() == 2
    assert _events(db) == 2


def test_a_batch_that_fails_half_way_keeps_nothing(db: Database) -> None:
    with pytest.raises(sa_exc.IntegrityError), db.write_rows() as connection, db.batch(connection, commit=True):
        connection.execute(INSERT, _event())
        connection.execute(INSERT, {**_event(), "origin": None})  # NOT NULL
        connection.execute(INSERT, _event())
    assert _events(db) == 0


def test_a_commit_answered_with_rollback_is_not_taken_for_one(env, postgres_url) -> None:
    """A transaction that already failed (its error caught) answers the batch's COMMIT with
    ROLLBACK, and no error: the batch says so instead of reporting a commit."""
    db = Runtime(load_settings({**env, "AURORA_DATABASE_URL": postgres_url})).db
    upgrade(postgres_url)
    with pytest.raises(sa_exc.DBAPIError, match="answered 'ROLLBACK'"), db.write_rows() as connection:
        connection.execute(INSERT, _event())
        with pytest.raises(sa_exc.DataError):
            connection.execute(text("SELECT 1 / 0"))
        with db.batch(connection, commit=True):
            pass  # an INSERT here would fail at once (the transaction is aborted): only the COMMIT
    assert _events(db) == 0


def test_the_change_takes_the_locks_only_when_it_changes_a_row(db: Database) -> None:
    with db.write_rows() as connection:
        connection.execute(INSERT, _event())
    table = Event.__table__
    change = table.update().where(table.c.type == "t").values(type="u")
    held = []
    with db.write_rows() as connection:
        assert db.change_then_lock(connection, change, {}, *OUTBOX_LOCKS) == 1
        if db.dialect == "postgresql":
            held = connection.execute(text("SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' "
                                           "AND pid = pg_backend_pid()")).scalars().all()
            # and, should the transaction then idle (a frozen worker), PostgreSQL ends it
            assert connection.execute(text("SHOW idle_in_transaction_session_timeout")).scalar() == "10s"
        assert db.change_then_lock(connection, change, {}, *OUTBOX_LOCKS) == 0  # nothing left to change
    if db.dialect == "postgresql":  # advisory keys are split in two halves: the low 32 bits are objid
        assert sorted(held) == sorted(key & 0xFFFFFFFF for key in OUTBOX_LOCKS)
        with db.write_rows() as connection:
            assert db.change_then_lock(connection, change, {}, *OUTBOX_LOCKS) == 0
            assert connection.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                           "AND pid = pg_backend_pid()")).scalar() == 0


@pytest.mark.timeout(60)  # without the batch's deadline the pipeline would wait for good
def test_a_pipeline_whose_server_stops_answering_is_cut_at_the_deadline(env, postgres_url) -> None:
    upgrade(postgres_url)
    with proxy_for(postgres_url) as proxy:
        url = proxy.url(postgres_url) + "?options=-c%20statement_timeout%3D500"  # deadline 0.5 + 2 s
        try:
            db = Runtime(load_settings({**env, "AURORA_DATABASE_URL": url})).db
            with db.write_rows() as connection:
                connection.execute(INSERT, _event())
            started = time.monotonic()
            with pytest.raises(sa_exc.DBAPIError) as cut, db.write_rows() as connection, \
                    db.batch(connection, commit=True):
                connection.execute(INSERT, _event())
                proxy.freeze()  # the server's kernel still takes the bytes; nothing answers
            took = time.monotonic() - started
            assert cut.value.connection_invalidated and component_of(cut.value) == "database"
            assert 500 / 1000 + aurora_db.PG_DEADLINE_GRACE - 0.5 < took < 10, took
        finally:
            aurora_db.forget(url)
    with Database(postgres_url).read() as session:  # the cut transaction kept nothing
        assert session.scalar(select(func.count()).select_from(Event)) == 1


@pytest.mark.timeout(60)
def test_a_pipeline_that_is_slow_but_answering_is_not_cut(env, postgres_url) -> None:
    # The server times each statement of a pipeline on its own: seven statements of 0.45 s each
    # under a statement_timeout of 0.5 s take 3.2 s, past one statement's client deadline (0.5 +
    # 2 s), and the batch must still commit (red when the deadline is not one per statement).
    upgrade(postgres_url)
    url = postgres_url + "?options=-c%20statement_timeout%3D500"
    try:
        db = Runtime(load_settings({**env, "AURORA_DATABASE_URL": url})).db
        started = time.monotonic()
        with db.write_rows() as connection, db.batch(connection, commit=True):
            for _ in range(7):
                connection.execute(text("SELECT pg_sleep(0.45)"))
            connection.execute(INSERT, _event("slow"))
        assert time.monotonic() - started > 3
    finally:
        aurora_db.forget(url)
    with Database(postgres_url).read() as session:
        assert session.scalar(select(func.count()).select_from(Event).where(Event.type == "slow")) == 1

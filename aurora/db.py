"""Database engine and sessions, SQLite and PostgreSQL alike.

SQLite is the embedded default and is shared by several processes (web, workers, beat), so it
runs in WAL mode with a busy timeout, and every write transaction starts with ``BEGIN
IMMEDIATE``: a deferred transaction that reads and then writes can fail at once with
"database is locked" instead of waiting its turn. Reads begin with ``BEGIN`` (one snapshot for
all their statements), a single-statement read with no transaction at all; each of the three
kinds has its own engine (see :class:`SQLiteDialect`).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, literal_column, text
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from . import changes, pgwatch, wal
from .errors import ConfigError

#: how long a SQLite writer waits for the lock before giving up (milliseconds)
SQLITE_BUSY_TIMEOUT_MS = 30_000

#: seconds PostgreSQL may take to accept a new connection (``?connect_timeout=`` in the URL wins)
PG_CONNECT_TIMEOUT = 5
#: libpq's TCP settings: a peer that vanished (a host gone, a network cut) is found by keepalive
#: probes after ~5 + 3 x 2 s idle, and unacknowledged data is given up after ``tcp_user_timeout``
#: (ms), instead of the kernel's ~15 minutes. Each one set in the URL's query wins.
PG_TCP = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
          "tcp_user_timeout": 10_000}
#: the server cancels a statement after this long (ms), sent as ``options=-c statement_timeout=``
#: unless the URL has ``options`` of its own. Aurora's statements take milliseconds; migrations,
#: which may take longer, run on a connection of their own without it (:func:`migration_engine`).
PG_STATEMENT_TIMEOUT_MS = 10_000
#: the client's own deadline beyond the server's (s): a frozen server cancels nothing itself
#: (aurora/pgwatch.py); and the deadline of the pool's pre-ping ``SELECT 1`` (s)
PG_DEADLINE_GRACE, PG_PING_DEADLINE = 2.0, 4.0
#: a pooled PostgreSQL connection idle longer than this (s) is pinged before it is handed out. A
#: busy worker takes its connection back within milliseconds of returning it: pinging it every
#: time cost a round trip per transaction (two per run) for a server that was there a moment ago.
PG_PING_AFTER_IDLE = 1.0

#: advisory lock keys (PostgreSQL) of the audit chain ("AURORA_AU") and of the event log
#: ("AURORA_EV"); every append takes both, in this order and in one statement (aurora.events)
#: and ends a transaction that then says nothing for ``PG_LOCKED_IDLE_MS`` (a frozen process)
PG_LOCKED_IDLE_MS = 10_000
AUDIT_LOCK_KEY = 0x4155524F52415F41
EVENT_LOCK_KEY = 0x4155524F52415F45
OUTBOX_LOCKS = (AUDIT_LOCK_KEY, EVENT_LOCK_KEY)

#: how each kind of SQLite transaction begins (None: a single statement, no transaction)
BEGIN_DEFERRED, BEGIN_IMMEDIATE, NO_TRANSACTION = "BEGIN", "BEGIN IMMEDIATE", None


class SQLiteDialect(SQLiteDialect_pysqlite):
    """pysqlite, with transactions begun by SQLAlchemy as this engine says.

    pysqlite's own transaction handling begins a transaction only before a write, so a read-then-
    write could see two snapshots; SQLAlchemy's recipe is a ``begin`` event listener that sends
    BEGIN. But any connection event listener makes SQLAlchemy dispatch every execution's events
    (~20 µs, a quarter of a simple statement), so the BEGIN is sent here instead, and each kind of
    transaction gets its own engine.
    """

    supports_statement_cache = True

    def __init__(self, aurora_begin: str | None = BEGIN_DEFERRED, **kwargs: Any):
        super().__init__(**kwargs)
        self.aurora_begin = aurora_begin

    def do_begin(self, dbapi_connection: Any) -> None:
        if self.aurora_begin:
            dbapi_connection.execute(self.aurora_begin)


registry.register("sqlite.aurora", __name__, "SQLiteDialect")


def _setup_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")  # a pool event: executions stay free of event dispatch
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.isolation_level = None  # the dialect sends BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute(f"PRAGMA wal_autocheckpoint = {wal.BACKSTOP_PAGES}")  # checkpoints: see aurora/wal.py
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()


_ENGINES: dict[tuple[str, str | None], Engine] = {}


def engine_for(url: str, begin: str | None = BEGIN_DEFERRED) -> Engine:
    """One engine (and pool) per database URL and kind of transaction per process.

    ``begin`` matters on SQLite only: PostgreSQL has one engine for all three kinds."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        begin = BEGIN_DEFERRED
    elif parsed.database in (None, "", ":memory:"):
        begin = BEGIN_IMMEDIATE  # an in-memory database lives in one pool: every kind shares its engine
    key = (url, begin)
    if key not in _ENGINES:
        _ENGINES[key] = _create(url, begin)
    return _ENGINES[key]


def compact_json(value: Any) -> str:
    """How JSON columns are written: without the blanks ``json.dumps`` puts after ``,`` and ``:``
    (about a tenth of a run's JSON). Nothing hashed or signed depends on it: the audit chain,
    the request hashes of votes and signed events all hash a canonical form of the values."""
    return json.dumps(value, separators=(",", ":"))


def _create(url: str, begin: str | None) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _create_private(Path(parsed.database))
        engine = create_engine(parsed.set(drivername="sqlite+aurora"), aurora_begin=begin, json_serializer=compact_json,
                               connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _setup_sqlite(engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        # A database host that drops packets or stops answering would hold a request until TCP
        # gives up (minutes) or for good; with bounds the request fails soon and is answered 503
        # (aurora/web/unavailable.py).
        connect_args = pg_connect_args(parsed.query)
        engine = create_engine(parsed, pool_size=5, max_overflow=10, connect_args=connect_args,
                               json_serializer=compact_json)
        # A run's events and steps are a few rows each: one INSERT ... VALUES (...), (...) is one
        # statement, where psycopg's executemany enters and leaves pipeline mode around them.
        engine.dialect.use_insertmanyvalues_wo_returning = True
        _ping_when_idle(engine)
        timeout_ms = statement_timeout_ms(str(connect_args.get("options") or parsed.query.get("options") or ""))
        if timeout_ms:
            pgwatch.watch(engine, timeout_ms / 1000 + PG_DEADLINE_GRACE, PG_PING_DEADLINE)
        return engine
    raise ConfigError(f"AURORA_DATABASE_URL: unsupported database {parsed.get_backend_name()!r} (use sqlite or postgresql)")


def _ping_when_idle(engine: Engine) -> None:
    """SQLAlchemy's ``pool_pre_ping``, for connections that were idle for a while only (a pool
    event: statements stay free of event dispatch). A ping that fails hands the pool's retry a
    new connection, as ``pool_pre_ping`` does."""

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["aurora_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("aurora_idle_since")
        if since is None or time.monotonic() - since < PG_PING_AFTER_IDLE:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)  # aurora.pgwatch gives it a deadline
        except Exception as exc:  # noqa: BLE001 - any failure: this connection is not to be used
            raise DisconnectionError(f"ping failed: {exc.__class__.__name__}") from exc
        if not alive:
            raise DisconnectionError("ping failed")


def pg_connect_args(query: Any, statement_timeout: bool = True) -> dict[str, Any]:
    """libpq parameters Aurora adds to a PostgreSQL URL; any the URL sets itself are left to it."""
    wanted: dict[str, Any] = {"connect_timeout": PG_CONNECT_TIMEOUT, **PG_TCP}
    if statement_timeout:
        wanted["options"] = f"-c statement_timeout={PG_STATEMENT_TIMEOUT_MS}"
    return {key: value for key, value in wanted.items() if key not in query}


def statement_timeout_ms(options: str) -> int:
    """The ``statement_timeout`` (ms) that libpq ``options`` set; 0 for none or one not understood
    (the client deadline then stays off rather than cut a statement the server allows)."""
    found = re.search(r"statement_timeout\s*=\s*(\d+)\s*(ms|s|min)?(?![\w.])", options)
    if not found:
        return 0
    return int(found.group(1)) * {None: 1, "ms": 1, "s": 1000, "min": 60_000}[found.group(2)]


@contextmanager
def migration_engine(url: str) -> Iterator[Engine]:
    """The engine migrations run on. On PostgreSQL a connection of their own, without the
    statement timeout and the client deadline: an index built on a big table may take minutes."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        yield engine_for(url)
        return
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine = create_engine(parsed, poolclass=NullPool, connect_args=pg_connect_args(parsed.query, False),
                           json_serializer=compact_json)
    try:
        yield engine
    finally:
        engine.dispose()


def connection_of(session: Session | Connection) -> Connection:
    """The Core connection of a Session's transaction, or the connection itself."""
    return session if isinstance(session, Connection) else session.connection()


def forget(url: str) -> None:
    """Close and drop this process's engines for a database (before the database is dropped)."""
    for key in [k for k in _ENGINES if k[0] == url]:
        _ENGINES.pop(key).dispose()


def dispose_all() -> None:
    """Drop every pooled connection: call in a child process after fork."""
    for engine in _ENGINES.values():
        engine.dispose(close=False)


class WriterLock:
    """Queue SQLite writers of all processes on one ``flock``.

    SQLite's own busy handler sleeps in growing steps (1, 2, 5, 10 … 100 ms) while another
    process writes, so contended writers idle far longer than the writes take. A kernel file
    lock wakes the next writer the moment the last one is done.
    """

    def __init__(self, path: Path):
        self.path = path
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self._thread_lock:
            if self._pid != os.getpid():  # a forked child must not share the parent's lock
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                self._pid = os.getpid()
            assert self._fd is not None
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)


def _create_private(path: Path) -> None:
    """Make a new SQLite file 0600 before SQLite does (it would use the umask, often 0644);
    SQLite gives its -wal and -shm files the mode of the database file."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


def insert_ignoring_conflicts(dialect: str, table: Any, **conflict: Any) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` into ``table`` in ``dialect`` (``conflict``: its
    target, as ``index_elements=``). Only that dialect's module is loaded: PostgreSQL's is ~3.5 MB
    resident in each process of an embedded (SQLite) stack."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing(**conflict)


class Database:
    """Sessions on one database. ``write()`` for anything that changes rows, ``read()`` otherwise."""

    def __init__(self, url: str, audit_key_file: Path | None = None):
        self.url = url
        self.audit_key_file = audit_key_file
        self._audit_key: bytes | None = None
        self.engine = engine_for(url)
        self.dialect = self.engine.dialect.name
        self._immediate = engine_for(url, BEGIN_IMMEDIATE)
        self._single_read = engine_for(url, NO_TRANSACTION)
        if self.dialect == "postgresql":
            # one statement needs no transaction: no BEGIN with it, no ROLLBACK round trip after it
            self._single_read = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._writer = sessionmaker(self._immediate, expire_on_commit=False)
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        database = self.engine.url.database
        self._write_lock = (
            WriterLock(Path(database + ".writelock"))
            if self.dialect == "sqlite" and database and database != ":memory:" else None
        )
        self.checkpointer = wal.checkpointer_for(self.engine) if self._write_lock is not None else None
        #: told the runs each committed write transaction changed (aurora/changes.py); set by the runtime
        self.on_commit: Callable[[dict[str, list[str]]], None] | None = None

    def audit_key(self) -> bytes:
        """The audit chain's HMAC key, created on first use and then kept for the process."""
        if self._audit_key is None:
            from .audit_key import load_or_create
            from .errors import AuditKeyError

            if self.audit_key_file is None:
                raise AuditKeyError("no audit key file configured for this database")
            self._audit_key = load_or_create(self.audit_key_file)
        return self._audit_key

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        """On a SQLite file: hold the writers' lock for the transaction, then count the commit for
        the background checkpoint (after the lock is released, so a checkpoint never holds it)."""
        if self._write_lock is None or self.checkpointer is None:
            yield
            return
        with self._write_lock.hold():
            yield
        self.checkpointer.committed()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on any exception."""
        with changes.collecting() as changed:
            with self._writer_turn(), self._writer() as session, session.begin():
                yield session
        self._announce(changed)

    @contextmanager
    def write_rows(self) -> Iterator[Connection]:
        """Like :meth:`write`, on a Core connection: for a hot path whose statements are all Core."""
        with changes.collecting() as changed:
            with self._writer_turn(), self._immediate.begin() as connection:
                yield connection
        self._announce(changed)

    def _announce(self, changed: dict[str, list[str]]) -> None:
        """After a commit: tell waiters which runs changed (never failing the committed write)."""
        if changed and self.on_commit is not None:
            try:
                self.on_commit(changed)
            except Exception:  # noqa: BLE001 - a lost note costs a waiter latency, never data
                import logging

                logging.getLogger(__name__).warning("could not announce changed runs", exc_info=True)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._reader() as session, session.begin():
            yield session

    @contextmanager
    def read_rows(self) -> Iterator[Connection]:
        """A Core connection for one read on a hot path (a Session costs more than the read).
        Give it a single statement: on SQLite it runs without an enclosing transaction."""
        with self._single_read.connect() as connection:
            yield connection

    def reader_idle(self) -> bool:
        """Whether :meth:`read_rows` gets a connection at once now: one is idle in its pool (a
        caller that must not wait for one, such as the web's event loop, asks first)."""
        checkedin = getattr(self._single_read.pool, "checkedin", None)
        return checkedin is not None and checkedin() > 0

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    @contextmanager
    def batch(self, connection: Connection, commit: bool = False) -> Iterator[Connection]:
        """Statements whose results nobody reads, sent together: INSERTs without ``RETURNING``
        (``insert().inline()``, or keys given: SQLAlchemy reads a new key back otherwise, which
        a pipeline cannot answer before its end).

        On PostgreSQL the block runs in a psycopg pipeline: each ``execute`` only queues its
        statement, and all of them — with ``commit``, the ``COMMIT`` too — cost one round trip at
        the end, where an error in any of them is raised (wrapped as SQLAlchemy wraps a driver's
        error). A statement after a failed one is not run, and a transaction with a failed
        statement cannot commit: nothing of it is kept. SQLite: the statements run one by one.

        ``commit``: the transaction ends with the block, and so does ``connection``: it is closed,
        so that a statement after the commit fails loudly instead of starting a new transaction
        that would be rolled back, unseen, when the connection goes back to the pool. Give it a
        Core connection of its own (:meth:`write_rows`), not a Session's.
        """
        if self.dialect != "postgresql":
            yield connection
        else:
            with self._pipeline(connection, commit):
                yield connection
        if commit:
            # PostgreSQL: the COMMIT was sent in the pipeline and its answer checked, so psycopg's
            # commit() finds an idle connection and sends nothing; SQLAlchemy's bookkeeping (its
            # transaction, the commit event) happens here, the same on both databases.
            transaction = connection.get_transaction()
            assert transaction is not None, "batch(commit=True) outside a transaction"
            transaction.commit()
            connection.close()

    @contextmanager
    def _pipeline(self, connection: Connection, commit: bool) -> Iterator[None]:
        dbapi_connection = connection.connection.dbapi_connection
        assert dbapi_connection is not None
        dbapi = self.engine.dialect.loaded_dbapi
        ended = None
        try:
            # The results are awaited when the pipeline ends, outside any execute: the client's
            # deadline (aurora/pgwatch.py) covers the whole block.
            with pgwatch.deadline(self.engine, dbapi_connection), dbapi_connection.pipeline():
                yield
                if commit:
                    ended = dbapi_connection.execute("COMMIT")
        except dbapi.Error as exc:
            gone = self.engine.dialect.is_disconnect(exc, dbapi_connection, None)
            if gone:
                connection.invalidate(exc)
            raise DBAPIError.instance("(a batch of statements)", None, exc, dbapi.Error,
                                      connection_invalidated=gone, dialect=self.engine.dialect) from exc
        if ended is not None and (ended.statusmessage != "COMMIT" or
                                  dbapi_connection.info.transaction_status != dbapi.pq.TransactionStatus.IDLE):
            # Never assumed: a COMMIT that answered otherwise (ROLLBACK: the transaction had
            # failed) must not pass for one, and psycopg must find nothing left to commit.
            raise DBAPIError.instance("COMMIT", None, dbapi.OperationalError(
                f"the batch's COMMIT answered {ended.statusmessage!r}"), dbapi.Error, dialect=self.engine.dialect)

    def change_then_lock(self, connection: Connection, statement: Any, params: dict[str, Any], *keys: int) -> int:
        """Run an UPDATE and take the advisory locks ``keys`` (see :meth:`lock`) in the same
        statement; return the number of rows it changed.

        On PostgreSQL the locks are the UPDATE's ``RETURNING pg_advisory_xact_lock(…)``: one round
        trip where an UPDATE and then a ``SELECT`` of the locks were two, and the same order as
        before (the row first, then the locks: no new way to deadlock). They are evaluated for each
        row changed, so a statement that changes nothing takes none — and then needs none. Give it
        an UPDATE of at most one row (the locks are taken again, harmlessly, for every further row).
        SQLite: the UPDATE alone (its writer already holds the database).
        """
        if self.dialect != "postgresql":
            return int(connection.execute(statement, params).rowcount)
        held = _held_locks(connection)
        wanted = tuple(key for key in keys if key not in held)
        if not wanted:
            return int(connection.execute(statement, params).rowcount)
        changed = len(connection.execute(_returning_locks(statement, wanted), params).all())
        if changed:
            held.update(wanted)
        return changed

    def lock(self, session: Session | Connection, *keys: int) -> None:
        """Serialise this transaction with others taking the same keys until it ends.

        SQLite writers are already serialised by ``BEGIN IMMEDIATE``; PostgreSQL takes advisory
        transaction locks, so that sequence numbers commit in the order they are given. Keys this
        transaction already holds are not asked for again (a statement each, on the hot path);
        the others are taken in one statement, in the order given. Take them outside savepoints:
        PostgreSQL releases a lock taken in a savepoint that rolls back, and this would not know.
        """
        if self.dialect != "postgresql":
            return
        connection = connection_of(session)
        held = _held_locks(connection)
        wanted = tuple(key for key in keys if key not in held)
        if wanted:
            connection.execute(_lock_statement(len(wanted)), {f"k{i}": key for i, key in enumerate(wanted)})
            held.update(wanted)


def _held_locks(connection: Connection) -> set[int]:
    """The advisory locks the connection's current transaction holds (a new transaction: none)."""
    transaction = connection.get_transaction()
    held = connection.info.get("aurora_locks")
    if held is None or held[0] is not transaction:
        held = connection.info["aurora_locks"] = (transaction, set())
    return held[1]


@cache
def _lock_statement(count: int) -> Any:
    return text("SELECT " + ", ".join([*(f"pg_advisory_xact_lock(:k{i})" for i in range(count)), _IDLE_LIMIT]))


@cache
def _returning_locks(statement: Any, keys: tuple[int, ...]) -> Any:
    # Made once per statement and keys (cached): a new statement object each call would cost
    # SQLAlchemy a cache key of its own each time. The keys are constants, written into the SQL.
    return statement.returning(*(func.pg_advisory_xact_lock(literal_column(str(int(key)))) for key in keys),
                               literal_column(_IDLE_LIMIT))


#: for this transaction only (``is_local``); see PG_LOCKED_IDLE_MS
_IDLE_LIMIT = f"set_config('idle_in_transaction_session_timeout', '{PG_LOCKED_IDLE_MS}', true)"

"""A client-side deadline for PostgreSQL statements: what answers when the server cannot.

``statement_timeout`` is enforced by the server's backend, and TCP keepalives and
``tcp_user_timeout`` by the kernels on the path. A server process that is frozen (``SIGSTOP``, a
hung VM whose kernel still answers, a stuck storage layer) passes all of them: its kernel
acknowledges every packet and its backend never cancels anything, so a statement would wait for
good. This watchdog shuts down the socket of a statement that runs past its deadline; psycopg then
raises a connection error, which the web layer answers with a 503 naming the database.

The deadline is longer than the server's ``statement_timeout``, so a server that works cancels a
slow statement itself first (a clean error); this only fires when the server does not.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event

log = logging.getLogger(__name__)

#: how often the watchdog looks for overdue statements (seconds)
TICK = 0.25


class Watchdog:
    """Statements (and pings) in flight on one engine's connections, each with its deadline."""

    def __init__(self, seconds: float, ping_seconds: float):
        self.seconds, self.ping_seconds = seconds, ping_seconds
        self._running: dict[int, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._pid = 0

    def begin(self, key: int, dbapi_connection: Any, seconds: float) -> None:
        with self._lock:
            if self._pid != os.getpid():  # a forked child has no watchdog thread yet
                self._running.clear()
                self._pid = os.getpid()
                threading.Thread(target=self._loop, name="aurora-pg-watchdog", daemon=True).start()
            self._running[key] = (time.monotonic() + seconds, dbapi_connection)

    def extend(self, key: int, seconds: float) -> None:
        """Push the deadline of ``key`` out by ``seconds``, if it is running (a batch's, below)."""
        with self._lock:
            running = self._running.get(key)
            if running is not None:
                self._running[key] = (running[0] + seconds, running[1])

    def end(self, key: int) -> None:
        with self._lock:
            self._running.pop(key, None)

    def _loop(self) -> None:
        pid = os.getpid()
        while pid == os.getpid():
            time.sleep(TICK)
            now = time.monotonic()
            with self._lock:
                overdue = [(key, conn) for key, (deadline, conn) in self._running.items() if deadline < now]
                for key, _ in overdue:
                    del self._running[key]
            for _, conn in overdue:
                _cut(conn)


def _cut(dbapi_connection: Any) -> None:
    """Shut the connection's socket down (both ways): its blocked read returns at once, with EOF.

    A duplicate of the descriptor is shut down and closed: ``shutdown`` acts on the socket that
    both share, and psycopg's own descriptor stays valid until psycopg closes it."""
    try:
        fd = dbapi_connection.fileno()
        sock = socket.socket(fileno=os.dup(fd))
    except Exception:  # noqa: BLE001 - closed meanwhile: nothing to cut
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
        log.warning("a PostgreSQL statement outlived its deadline (the server did not answer, or this process "
                    "was stopped meanwhile): connection cut")
    except OSError:
        pass
    finally:
        sock.close()


#: each watched engine's watchdog (weakly: a disposed engine takes its own along)
_DOGS: weakref.WeakKeyDictionary[Engine, Watchdog] = weakref.WeakKeyDictionary()


@contextmanager
def deadline(engine: Engine, dbapi_connection: Any) -> Iterator[None]:
    """A deadline over the whole block, for a psycopg pipeline on this connection
    (``Database.batch``): there each ``execute`` only queues its statement and returns at once
    (its own deadline ends with it), and the waiting for all their results happens at the
    pipeline's end, outside any execute. The server gives each statement of a pipeline its own
    ``statement_timeout``, so the block's deadline is one statement's for each statement queued in
    it (``_before``) and one more for what the block sends itself (its ``COMMIT``): a batch that is
    slow but answering is never cut, one whose server stopped answering is. Nothing, if the
    engine is not watched."""
    dog = _DOGS.get(engine)
    if dog is None:
        yield
        return
    key = id(dbapi_connection)  # as a ping's: a connection is never pinged while it is in use
    dog.begin(key, dbapi_connection, dog.seconds)
    try:
        yield
    finally:
        dog.end(key)


def watch(engine: Engine, seconds: float, ping_seconds: float) -> Watchdog:
    """Give every statement on ``engine`` a deadline of ``seconds``, and the pool's pre-ping one
    of ``ping_seconds`` (a ``SELECT 1`` that takes long means the server is not answering)."""
    dog = _DOGS[engine] = Watchdog(seconds, ping_seconds)

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, *_args: Any) -> None:
        dbapi_connection = conn.connection.dbapi_connection
        dog.extend(id(dbapi_connection), dog.seconds)  # a statement queued in a batch (``deadline``)
        dog.begin(id(cursor), dbapi_connection, dog.seconds)

    @event.listens_for(engine, "after_cursor_execute")
    def _after(_conn: Any, cursor: Any, *_args: Any) -> None:
        dog.end(id(cursor))

    @event.listens_for(engine, "handle_error")
    def _error(context: Any) -> None:
        cursor = getattr(context, "cursor", None)  # unset for an error of the pre-ping
        if cursor is not None:
            dog.end(id(cursor))

    original = engine.dialect.do_ping

    def do_ping(dbapi_connection: Any) -> bool:
        key = id(dbapi_connection)
        dog.begin(key, dbapi_connection, dog.ping_seconds)
        try:
            return original(dbapi_connection)
        finally:
            dog.end(key)

    engine.dialect.do_ping = do_ping  # type: ignore[method-assign]
    return dog

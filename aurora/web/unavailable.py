"""Tell "a part of the stack is down" apart from "a bug": the first is a 503 with ``Retry-After``.

A request that meets a stopped PostgreSQL, a full disk or an unreachable broker has done nothing
wrong and may succeed in a moment, so it must not get the 500 that says "Aurora is broken". The
messages are fixed sentences: a driver's own text may name hosts, ports, users or paths.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator

from sqlalchemy import exc as sa_exc

from ..errors import Unavailable

#: seconds a client should wait before trying again, per component (a disk is freed by a person)
RETRY_AFTER = {"database": 5, "broker": 5, "disk": 30}

#: an OSError with one of these means the disk, not the request, is the problem
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})

# SQLite's primary result codes (the low byte of an extended code): https://sqlite.org/rescode.html
SQLITE_BUSY, SQLITE_LOCKED, SQLITE_NOMEM, SQLITE_READONLY = 5, 6, 7, 8
SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN = 10, 13, 14
SQLITE_DISK = frozenset({SQLITE_IOERR, SQLITE_FULL})
SQLITE_DOWN = frozenset({SQLITE_BUSY, SQLITE_LOCKED, SQLITE_NOMEM, SQLITE_READONLY, SQLITE_CANTOPEN})

#: PostgreSQL SQLSTATEs that mean "the server cannot serve us now", not "the request is wrong":
#: 25006 read_only_sql_transaction (a failover left us on a standby, or the database was made
#: read-only), 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now (starting up
#: or recovering), 53300 too_many_connections; and all of class 08 (connection exceptions).
#: psycopg maps 25006 to InternalError, which the OperationalError test below would miss.
PG_DOWN_SQLSTATES = frozenset({"25006", "57P01", "57P02", "57P03", "53300"})
PG_DOWN_CLASSES = frozenset({"08"})

MESSAGES = {
    "database": "the database is unavailable; try again shortly",
    "disk": "the disk is full or failing; nothing was stored; try again later",
    "broker": "the message broker is unavailable; try again shortly",
}


def make(component: str) -> Unavailable:
    return Unavailable(component, MESSAGES[component], RETRY_AFTER[component])


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The error and what caused it (a wrapper may hide the OSError or driver error inside)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _sqlite(error: sqlite3.Error) -> str | None:
    code = getattr(error, "sqlite_errorcode", None)
    if code is None:
        # Without a result code only the message tells; these are SQLite's fixed texts.
        text = str(error).lower()
        if "disk is full" in text or "disk i/o error" in text:
            return "disk"
        if "unable to open database" in text or "database is locked" in text or "readonly database" in text:
            return "database"
        return None
    primary = code & 0xFF
    if primary in SQLITE_DISK:
        return "disk"
    return "database" if primary in SQLITE_DOWN else None


def _pg_down(error: BaseException) -> bool:
    """A driver error whose SQLSTATE says the PostgreSQL server is unavailable."""
    state = getattr(error, "sqlstate", None)
    return isinstance(state, str) and (state in PG_DOWN_SQLSTATES or state[:2] in PG_DOWN_CLASSES)


def component_of(exc: BaseException) -> str | None:
    """Which component made this error, if it means "unavailable"; None for anything else (a bug)."""
    for error in _chain(exc):
        if isinstance(error, Unavailable):
            return error.component
        if isinstance(error, sa_exc.DBAPIError):
            if isinstance(error.orig, sqlite3.Error):
                found = _sqlite(error.orig)
                if found:
                    return found
                continue  # "no such table", a syntax error: a bug or a missing migration, not an outage
            if _pg_down(error.orig):
                return "database"
            # psycopg maps connection loss, admin shutdown, too many connections and a full disk on
            # the server (SQLSTATE classes 08, 53, 57, 58) to OperationalError.
            if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError) or error.connection_invalidated:
                return "database"
        if isinstance(error, sa_exc.TimeoutError):  # every pooled connection busy or hung
            return "database"
        if _pg_down(error):  # a psycopg error that no SQLAlchemy wrapper reached
            return "database"
        if isinstance(error, sqlite3.Error):
            found = _sqlite(error)
            if found:
                return found
        if isinstance(error, OSError) and error.errno in DISK_ERRNOS:
            return "disk"
        if _broker_error(error):
            return "broker"
    return None


def _broker_error(error: BaseException) -> bool:
    try:
        from kombu.exceptions import OperationalError as KombuOperationalError
    except ImportError:  # pragma: no cover - kombu is a dependency
        return False
    if isinstance(error, KombuOperationalError):
        return True
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # redis is only there with a Redis broker
        return False
    return isinstance(error, RedisConnectionError | RedisTimeoutError)


def classify(exc: BaseException) -> Unavailable | None:
    """The :class:`Unavailable` this error stands for, or None."""
    if isinstance(exc, Unavailable):
        return exc
    component = component_of(exc)
    return make(component) if component else None

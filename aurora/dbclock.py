"""The database's clock, for leases: every worker compares lease times with one clock.

A worker whose own clock runs fast would otherwise see a lease another worker keeps renewing
as lapsed and take the run over, and one whose clock runs slow would write leases that look
fresh to everyone else long after it died. So lease expiries are set from, and compared with,
the database server's time (:func:`db_now`, :func:`db_later`), never a worker's ``utcnow()``.

On SQLite, ``CURRENT_TIMESTAMP`` is text without a fraction (``YYYY-MM-DD HH:MM:SS``), while
SQLAlchemy stores a ``DateTime`` as ``YYYY-MM-DD HH:MM:SS.ffffff``; text compares as text, so a
bare ``CURRENT_TIMESTAMP`` would be off by up to a second. ``strftime('%Y-%m-%d %H:%M:%f000')``
writes SQLAlchemy's own format (``%f`` is ``SS.mmm``, the three zeros make microseconds), so
stored and computed times compare correctly and read back as ordinary datetimes. On PostgreSQL
``statement_timestamp()`` is the server's time when the statement began (``now()`` would be the
start of the transaction).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, cast
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from .models import UTCDateTime

_SQLITE_FORMAT = "'%Y-%m-%d %H:%M:%f000'"


class db_now(FunctionElement):  # noqa: N801 - reads like the SQL function it stands for
    """The database server's current time."""

    type = UTCDateTime()
    inherit_cache = True
    name = "db_now"


class db_later(FunctionElement):  # noqa: N801
    """The database server's current time plus ``seconds`` (a bind parameter or number)."""

    type = UTCDateTime()
    inherit_cache = True
    name = "db_later"

    def __init__(self, seconds: Any):
        super().__init__(cast(seconds, Float))


@compiles(db_now)
def _now(element: db_now, compiler: Any, **kw: Any) -> str:
    return "statement_timestamp()"


@compiles(db_now, "sqlite")
def _now_sqlite(element: db_now, compiler: Any, **kw: Any) -> str:
    return f"strftime({_SQLITE_FORMAT}, 'now')"


@compiles(db_later)
def _later(element: db_later, compiler: Any, **kw: Any) -> str:
    (seconds,) = element.clauses
    return f"(statement_timestamp() + {compiler.process(seconds, **kw)} * INTERVAL '1 second')"


@compiles(db_later, "sqlite")
def _later_sqlite(element: db_later, compiler: Any, **kw: Any) -> str:
    (seconds,) = element.clauses
    return f"strftime({_SQLITE_FORMAT}, 'now', {compiler.process(seconds, **kw)} || ' seconds')"

"""``Idempotency-Key`` for ``POST /workflows`` (draft-ietf-httpapi-idempotency-key-header).

A client that lost the answer to a submission (a connection reset, a timeout) sends the same
request again with the same key and gets the run the first request made, not a second one. The
key is remembered per owner (the API key's name: two people's keys never collide) with the digest
of the submitted document, for at least :data:`RETENTION`. The row is written in the transaction
that stores the run, and ``(owner, key)`` is the table's primary key, so of two racing identical
requests one stores the run and the other finds it.

What "the same body" means: the same workflow document after parsing (its canonical digest), so a
retried multipart upload with a new boundary, or the same YAML re-indented, is the same request.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, delete, insert, select

from .errors import IdempotencyKeyError, IdempotencyKeyReused
from .models import IdempotencyKey, UTCDateTime

#: how long a key is kept: a client retrying later than this makes a new run
RETENTION = timedelta(hours=24)
#: longest accepted key (a UUID is 36 characters)
MAX_LENGTH = 255
#: seconds between two prunes of expired keys by one process (each prune is one indexed DELETE)
PRUNE_EVERY = 600.0

KEYS = IdempotencyKey.__table__
_FIND = select(KEYS.c.request_hash, KEYS.c.run_id, KEYS.c.created_at).where(
    KEYS.c.owner == bindparam("owner"), KEYS.c.key == bindparam("key"))
_INSERT = insert(KEYS)
_FORGET = delete(KEYS).where(KEYS.c.owner == bindparam("owner"), KEYS.c.key == bindparam("key"))
_PRUNE = delete(KEYS).where(KEYS.c.created_at < bindparam("before", type_=UTCDateTime()))

_last_prune = 0.0


def parse(header: str | None) -> str | None:
    """The key of an ``Idempotency-Key`` header, or None without one; :class:`IdempotencyKeyError`
    for a bad one. The draft makes the value a structured-field string (``"abc"``); a bare token
    (``abc``, as Stripe takes it) is accepted too and means the same key."""
    if header is None:
        return None
    value = header.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if not value:
        raise IdempotencyKeyError("Idempotency-Key: must not be empty")
    if len(value) > MAX_LENGTH:
        raise IdempotencyKeyError(f"Idempotency-Key: at most {MAX_LENGTH} characters, got {len(value)}")
    if not all(" " <= ch <= "~" for ch in value) or '"' in value or "\\" in value:
        raise IdempotencyKeyError('Idempotency-Key: only printable ASCII, without " or \\ (a UUID is ideal)')
    return value


def claim(connection: Connection, owner: str, key: str, request_hash: str, run_id: str,
          now: datetime) -> str | None:
    """In the transaction that will store run ``run_id``: remember the key for it and return None,
    or return the id of the run an earlier request with this key made.

    Raises :class:`IdempotencyKeyReused` when that request sent another document. On PostgreSQL a
    concurrent transaction holding the same key makes the INSERT wait for it and then fail with
    an IntegrityError: the caller runs its transaction again and finds the winner's row here."""
    _prune_now_and_then(connection, now)
    earlier = connection.execute(_FIND, {"owner": owner, "key": key}).first()
    if earlier is not None and earlier.created_at >= now - RETENTION:
        if earlier.request_hash != request_hash:
            raise IdempotencyKeyReused(
                "Idempotency-Key: this key was used before with a different workflow; use a new key "
                "for a new request")
        return earlier.run_id
    if earlier is not None:  # expired but not pruned yet: the key is free again
        connection.execute(_FORGET, {"owner": owner, "key": key})
    connection.execute(_INSERT, {"owner": owner, "key": key, "request_hash": request_hash, "run_id": run_id,
                                 "created_at": now})
    return None


def prune(connection: Connection, now: datetime) -> int:
    """Forget every key older than :data:`RETENTION`; return how many."""
    return connection.execute(_PRUNE, {"before": now - RETENTION}).rowcount


def _prune_now_and_then(connection: Connection, now: datetime) -> None:
    # Inside a submission's own write transaction, so pruning costs no extra turn at the lock;
    # a per-process clock keeps it to one indexed DELETE every PRUNE_EVERY seconds.
    global _last_prune
    if time.monotonic() - _last_prune < PRUNE_EVERY:
        return
    _last_prune = time.monotonic()
    prune(connection, now)

"""API keys: made once, shown once, stored as a SHA-256, compared in constant time.

A key looks like ``aur_<key_id>_<secret>``. The ``key_id`` finds the row; the hash of the whole
key is compared with :func:`hmac.compare_digest`. Keys carry 256 bits of randomness, so a plain
SHA-256 is enough (a slow password hash protects low-entropy human passwords, not these).

A process remembers a key it has verified for ``AURORA_KEY_CACHE_SECONDS`` (default 1 s; 0: never),
keyed by the key's hash: the read of the key's row cost more than everything else ``POST /route``
does (docs/benchmarks.md). So a key revoked, or a person removed, in another process stops working
there within that bound; in the process that revoked it, at once. Admin keys are read every time:
what an admin key can do (make new keys) would outlive any bound. A refused key is never remembered.

A key belongs to a person (``aurora.people``) and acts with the person's role: quorum counts
people, and a person with a laptop, a phone and a CI key is still one approver.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select

from . import audit
from .db import Database
from .errors import AuthError, Conflict, InvalidName, PermissionDenied
from .models import ApiKey, Person, Role

PREFIX = "aur_"
# The role is the person's; a key without a person (written by a version before 0007 while
# this one runs) is its own person with its own role.
_BY_KEY_ID = select(
    ApiKey.name, func.coalesce(Person.role, ApiKey.role).label("role"), ApiKey.key_hash, ApiKey.revoked_at,
    func.coalesce(ApiKey.person, ApiKey.name).label("person"), Person.removed_at, ApiKey.key_id,
).outerjoin(Person, Person.name == ApiKey.person).where(ApiKey.key_id == bindparam("key_id"))


@dataclass(frozen=True)
class Caller:
    """Who is asking: the key's name, its person and the person's role."""

    name: str
    role: Role
    #: the person holding the key (defaults to the key's name, as for keys made before 0007)
    person: str = ""
    key_id: str = ""

    def __post_init__(self) -> None:
        if not self.person:
            object.__setattr__(self, "person", self.name)

    def require(self, *roles: Role) -> None:
        if self.role is not Role.ADMIN and self.role not in roles:
            allowed = ", ".join(sorted({"admin", *(r.value for r in roles)}))
            raise PermissionDenied(f"role {self.role.value!r} may not do this (needs one of: {allowed})")


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


#: what a person's name may be, once folded to lower case: "Alice", "alice" and "alice " are one person
PERSON_NAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")


def person_name(raw: str) -> str:
    """The one spelling of a person's name; a quorum counts these, so variants must not be two people."""
    name = raw.strip().lower()
    if not PERSON_NAME.fullmatch(name):
        raise InvalidName(f"person {raw!r}: use 1-64 letters, digits, '.', '_', '-' or '@', "
                              "starting with a letter or digit")
    return name


def create(db: Database, name: str, role: Role, person: str | None = None) -> str:
    """Make a key for ``person`` (default: a person named like the key, made if new) and return
    it; only its hash is kept. The key acts with the person's role, so ``role`` must be it."""
    person = person_name(person or name)
    key_id = secrets.token_hex(6)
    key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    with db.write() as session:
        if session.scalar(select(ApiKey).where(ApiKey.name == name)) is not None:
            raise Conflict(f"a key named {name!r} already exists")
        holder = session.get(Person, person)
        if holder is None:
            session.add(Person(name=person, role=role.value))
        elif holder.removed_at is not None:
            raise Conflict(f"person {person!r} was removed; give the key to another person")
        elif holder.role != role.value:
            raise Conflict(f"person {person!r} has the role {holder.role!r}, and every key of a person acts with "
                           f"the person's role: use --role {holder.role}, or another person")
        session.add(ApiKey(key_id=key_id, name=name, role=role.value, key_hash=_hash(key), person=person))
        audit.note(db, session, "keys", "create", {"name": name, "role": role.value, "key_id": key_id,
                                                   "person": person})
    return key


class _Verified:
    """The keys one process verified lately: hash -> (caller, until when, monotonic)."""

    def __init__(self) -> None:
        self.callers: dict[str, tuple[Caller, float]] = {}
        #: moved on by every forget(): a read begun before it must not be remembered after it
        self.generation = 0
        self.lock = threading.Lock()


#: entries kept at most per database: a flood of distinct valid keys cannot grow the process
MAX_REMEMBERED = 4096
_verified: weakref.WeakKeyDictionary[Database, _Verified] = weakref.WeakKeyDictionary()
_verified_lock = threading.Lock()


def _remembered(db: Database) -> _Verified:
    found = _verified.get(db)
    if found is None:
        with _verified_lock:
            found = _verified.setdefault(db, _Verified())
    return found


def forget_verified(db: Database) -> None:
    """Forget every key this process verified on ``db`` (a key was revoked or a person removed)."""
    remembered = _remembered(db)
    with remembered.lock:
        remembered.generation += 1
        remembered.callers.clear()


def remembered(db: Database, key: str, for_at_least: float = 0.0) -> bool:
    """Whether :func:`authenticate` would answer for ``key`` from memory, without reading the
    database, for at least ``for_at_least`` seconds more."""
    hit = _remembered(db).callers.get(_hash(key)) if key else None
    return hit is not None and hit[1] > time.monotonic() + for_at_least


def authenticate(db: Database, key: str | None, remember: float = 0.0) -> Caller:
    """The caller a presented key belongs to, or :class:`AuthError`. With ``remember`` (seconds),
    a key this process verified less than that long ago is not read again (admin keys always are)."""
    if not key:
        raise AuthError("missing API key: send 'Authorization: Bearer <key>'")
    parts = key.split("_")
    if len(parts) < 3 or not key.startswith(PREFIX):
        raise AuthError("invalid API key")
    digest = _hash(key)
    if remember > 0:
        remembered = _remembered(db)
        hit = remembered.callers.get(digest)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        generation = remembered.generation
    with db.read_rows() as connection:
        row = connection.execute(_BY_KEY_ID, {"key_id": parts[1]}).one_or_none()
    # Compare even when the row is missing, so timing does not reveal which key ids exist.
    expected = row.key_hash if row is not None else _hash("")
    valid = hmac.compare_digest(expected, digest) and row is not None
    if not valid or row is None or row.revoked_at is not None or row.removed_at is not None:
        raise AuthError("invalid or revoked API key")
    caller = _caller(row)
    if remember > 0 and caller.role is not Role.ADMIN:
        with remembered.lock:
            if remembered.generation == generation:
                if len(remembered.callers) >= MAX_REMEMBERED:
                    remembered.callers.clear()
                remembered.callers[digest] = (caller, time.monotonic() + remember)
    return caller


def _caller(row: Any) -> Caller:
    return Caller(name=row.name, role=Role(row.role), person=row.person, key_id=row.key_id)


def listing(db: Database) -> list[dict[str, str | None]]:
    with db.read() as session:
        rows = session.execute(select(ApiKey, Person.role).outerjoin(Person, Person.name == ApiKey.person)
                               .order_by(ApiKey.pk))
        return [
            {
                "name": k.name,
                "person": k.person or k.name,
                "role": role or k.role,
                "key_id": k.key_id,
                "created_at": k.created_at.isoformat(),
                "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
            }
            for k, role in rows
        ]


def revoke(db: Database, name: str) -> None:
    """Revoke a key at once (``aurora.people.revoke_key``: never the last admin's)."""
    from .people import revoke_key

    revoke_key(db, name)


def any_admin(db: Database) -> bool:
    with db.read() as session:
        query = select(ApiKey.pk).outerjoin(Person, Person.name == ApiKey.person).where(
            func.coalesce(Person.role, ApiKey.role) == Role.ADMIN.value, ApiKey.revoked_at.is_(None),
            Person.removed_at.is_(None)).limit(1)
        return session.scalar(query) is not None


def fingerprint(key: str) -> tuple[str, str]:
    """What a web session keeps instead of the key: its id and its hash."""
    return key.split("_")[1], _hash(key)


def authenticate_fingerprint(db: Database, key_id: str | None, key_hash: str | None) -> Caller:
    """The caller of a signed-in session, re-checked on every request (a revoked key ends it)."""
    if not key_id or not key_hash:
        raise AuthError("not signed in")
    with db.read_rows() as connection:
        row = connection.execute(_BY_KEY_ID, {"key_id": key_id}).one_or_none()
    if row is None or row.revoked_at is not None or row.removed_at is not None \
            or not hmac.compare_digest(row.key_hash, key_hash):
        raise AuthError("the session's key is no longer valid")
    return _caller(row)

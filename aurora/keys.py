"""API keys: made once, shown once, stored as a SHA-256, compared in constant time.

A key looks like ``aur_<key_id>_<secret>``. The ``key_id`` finds the row; the hash of the whole
key is compared with :func:`hmac.compare_digest`. Keys carry 256 bits of randomness, so a plain
SHA-256 is enough (a slow password hash protects low-entropy human passwords, not these).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import bindparam, select

from . import audit
from .db import Database
from .errors import AuthError, Conflict, NotFound, PermissionDenied
from .models import ApiKey, Role, utcnow

PREFIX = "aur_"
_BY_KEY_ID = select(ApiKey.name, ApiKey.role, ApiKey.key_hash, ApiKey.revoked_at).where(
    ApiKey.key_id == bindparam("key_id"))


@dataclass(frozen=True)
class Caller:
    """Who is asking: the key's name and role."""

    name: str
    role: Role

    def require(self, *roles: Role) -> None:
        if self.role is not Role.ADMIN and self.role not in roles:
            allowed = ", ".join(sorted({"admin", *(r.value for r in roles)}))
            raise PermissionDenied(f"role {self.role.value!r} may not do this (needs one of: {allowed})")


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create(db: Database, name: str, role: Role) -> str:
    """Make a key and return it; only its hash is kept."""
    key_id = secrets.token_hex(6)
    key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    with db.write() as session:
        if session.scalar(select(ApiKey).where(ApiKey.name == name)) is not None:
            raise Conflict(f"a key named {name!r} already exists")
        session.add(ApiKey(key_id=key_id, name=name, role=role.value, key_hash=_hash(key)))
        audit.note(db, session, "keys", "create", {"name": name, "role": role.value, "key_id": key_id})
    return key


def authenticate(db: Database, key: str | None) -> Caller:
    """The caller a presented key belongs to, or :class:`AuthError`."""
    if not key:
        raise AuthError("missing API key: send 'Authorization: Bearer <key>'")
    parts = key.split("_")
    if len(parts) < 3 or not key.startswith(PREFIX):
        raise AuthError("invalid API key")
    with db.read_rows() as connection:
        row = connection.execute(_BY_KEY_ID, {"key_id": parts[1]}).one_or_none()
        # Compare even when the row is missing, so timing does not reveal which key ids exist.
        expected = row.key_hash if row is not None else _hash("")
        valid = hmac.compare_digest(expected, _hash(key)) and row is not None
        if not valid or row is None or row.revoked_at is not None:
            raise AuthError("invalid or revoked API key")
        return Caller(name=row.name, role=Role(row.role))


def listing(db: Database) -> list[dict[str, str | None]]:
    with db.read() as session:
        return [
            {
                "name": k.name,
                "role": k.role,
                "key_id": k.key_id,
                "created_at": k.created_at.isoformat(),
                "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
            }
            for k in session.scalars(select(ApiKey).order_by(ApiKey.pk))
        ]


def revoke(db: Database, name: str) -> None:
    with db.write() as session:
        row = session.scalar(select(ApiKey).where(ApiKey.name == name))
        if row is None:
            raise NotFound(f"no key named {name!r}")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            audit.note(db, session, "keys", "revoke", {"name": name, "role": row.role, "key_id": row.key_id})


def any_admin(db: Database) -> bool:
    with db.read() as session:
        query = select(ApiKey.pk).where(ApiKey.role == Role.ADMIN.value, ApiKey.revoked_at.is_(None)).limit(1)
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
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, key_hash):
        raise AuthError("the session's key is no longer valid")
    return Caller(name=row.name, role=Role(row.role))

"""The approval page's sessions, kept server-side: a random id in the cookie, its hash in
``web_sessions``, the key re-checked on every request.

The cookie used to carry the key's id and SHA-256: logging out only cleared the browser's copy (a
copied cookie kept working for its eight hours) and the cookie held key material. Now the cookie
holds nothing but a random id; logout deletes the row, revoking the key ends every session of it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from sqlalchemy import delete, func, select

from .db import Database
from .errors import AuthError
from .keys import Caller
from .models import ApiKey, Person, Role, WebSession, utcnow

#: how long a sign-in lasts
LIFETIME = timedelta(hours=8)


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


def start(db: Database, key_id: str) -> str:
    """A new session for an authenticated key; returns the id to put in the cookie."""
    session_id = secrets.token_urlsafe(32)
    now = utcnow()
    with db.write() as session:
        # Expired rows go with the next sign-in: no sweep needed for a table this small.
        session.execute(delete(WebSession).where(WebSession.expires_at < now))
        session.add(WebSession(id_hash=_hash(session_id), key_id=key_id, created_at=now, expires_at=now + LIFETIME))
    return session_id


def caller(db: Database, session_id: str | None) -> Caller:
    """Whose session this is; AuthError when it ended (logout, expiry) or its key was revoked."""
    if not session_id or not isinstance(session_id, str):
        raise AuthError("not signed in")
    wanted = _hash(session_id)
    with db.read_rows() as connection:
        row = connection.execute(
            # the key's person and the person's role, as ``keys.authenticate`` reads them: a session
            # that acted as its key's name let a person's second key vote again, or approve their own run
            select(WebSession.id_hash, WebSession.expires_at, ApiKey.name, ApiKey.key_id, ApiKey.revoked_at,
                   func.coalesce(Person.role, ApiKey.role).label("role"),
                   func.coalesce(ApiKey.person, ApiKey.name).label("person"), Person.removed_at)
            .join(ApiKey, ApiKey.key_id == WebSession.key_id).outerjoin(Person, Person.name == ApiKey.person)
            .where(WebSession.id_hash == wanted)).one_or_none()
    if row is None or not hmac.compare_digest(row.id_hash, wanted) or row.expires_at < utcnow() \
            or row.revoked_at is not None or row.removed_at is not None:
        raise AuthError("the session has ended")
    return Caller(name=row.name, role=Role(row.role), person=row.person, key_id=row.key_id)


def end(db: Database, session_id: str | None) -> None:
    if session_id and isinstance(session_id, str):
        with db.write() as session:
            session.execute(delete(WebSession).where(WebSession.id_hash == _hash(session_id)))

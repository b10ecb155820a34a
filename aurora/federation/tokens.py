"""This node's federation tokens: made for one peer, shown once, stored as a SHA-256, compared in
constant time. A peer may hold two valid tokens at once, so a token is rotated without downtime:
create the new one, give it to the peer, revoke the old one."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select

from .. import audit
from ..db import Database
from ..errors import AuthError, NotFound
from ..models import utcnow
from .models import FederationToken

PREFIX = "aurfed_"
#: at most this many valid tokens per peer (the current one and its successor)
MAX_VALID = 2


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create(db: Database, peer: str) -> str:
    """A new token for ``peer``; refused if the peer already holds two valid ones."""
    token = PREFIX + secrets.token_urlsafe(32)
    with db.write() as session:
        valid = session.scalars(select(FederationToken).where(
            FederationToken.peer == peer, FederationToken.revoked_at.is_(None))).all()
        if len(valid) >= MAX_VALID:
            raise AuthError(f"{peer} already has {MAX_VALID} valid tokens; revoke one first "
                            f"(aurora federation token revoke ID)")
        row = FederationToken(peer=peer, token_hash=_hash(token), created_at=utcnow())
        session.add(row)
        session.flush()
        audit.note(db, session, "federation", "token_create", {"peer": peer, "token": row.pk})
    return token


def peer_for(db: Database, token: str | None) -> str:
    """The peer a presented token belongs to, or :class:`AuthError`."""
    if not token:
        raise AuthError("missing federation token: send 'Authorization: Bearer <token>'")
    presented = _hash(token)
    found = None
    with db.read() as session:
        rows = session.execute(select(FederationToken.peer, FederationToken.token_hash)
                               .where(FederationToken.revoked_at.is_(None))).all()
    for peer, stored in rows:  # every comparison runs: the time does not tell which one matched
        if hmac.compare_digest(stored, presented):
            found = peer
    if found is None:
        raise AuthError("invalid or revoked federation token")
    return found


def listing(db: Database) -> list[dict[str, object]]:
    with db.read() as session:
        return [{"id": t.pk, "peer": t.peer, "created_at": t.created_at.isoformat(),
                 "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None}
                for t in session.scalars(select(FederationToken).order_by(FederationToken.pk))]


def revoke(db: Database, token_id: int) -> None:
    with db.write() as session:
        row = session.get(FederationToken, token_id)
        if row is None:
            raise NotFound(f"no federation token {token_id}")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            audit.note(db, session, "federation", "token_revoke", {"peer": row.peer, "token": row.pk})

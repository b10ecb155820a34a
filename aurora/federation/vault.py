"""Peers' tokens at rest, sealed (``aurora/sealed.py``: Fernet under a key file, 0600) with
``AURORA_HOME/federation_tokens.key``, so a database dump alone does not reveal them. Tokens
stored in plain text before sealing existed are sealed by ``aurora db upgrade``
(:func:`seal_plaintext`) and, until then, still read as they are.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select, text

from .. import sealed
from ..db import Database
from .models import Node

#: marks a sealed value; anything else in ``nodes.token`` is a plaintext token from before
PREFIX = sealed.PREFIX
#: what to do about a token that cannot be opened
REMEDY = "register the peer again"


class VaultError(sealed.SealError):
    """Raised when the token key is unusable, or a sealed token does not open with it."""

    code = "federation_key_error"


def seal(path: Path, token: str) -> str:
    try:
        return sealed.seal(path, token)
    except sealed.SealError as exc:
        raise VaultError(str(exc)) from None


def open_token(path: Path, stored: str) -> str:
    if not stored.startswith(PREFIX):
        return stored  # from before tokens were sealed; ``aurora db upgrade`` seals it
    try:
        return sealed.unseal(path, stored, remedy=REMEDY)
    except sealed.SealError as exc:
        raise VaultError(f"a peer's token cannot be opened: {exc}") from None


def seal_plaintext(db: Database, path: Path) -> int:
    """Encrypt every token still stored in plain text; returns how many were.

    On SQLite the old text must also leave the files: the space it took is zeroed
    (``secure_delete``) and the write-ahead log is checkpointed into the database and emptied,
    or a copy of the files would still hold the token."""
    with db.write() as session:
        nodes = [n for n in session.scalars(select(Node)) if not n.token.startswith(PREFIX)]
        if nodes and db.dialect == "sqlite":
            session.execute(text("PRAGMA secure_delete = ON"))
        for node in nodes:
            node.token = seal(path, node.token)
        session.flush()
        if nodes and db.dialect == "sqlite":
            session.execute(text("PRAGMA secure_delete = OFF"))
    if nodes and db.dialect == "sqlite":
        with db.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return len(nodes)

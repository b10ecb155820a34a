"""Peers' tokens at rest: encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``)
under a key in a file under ``AURORA_HOME`` (0600, made on first use), so a database dump alone
does not reveal them. Tokens stored in plain text before this existed are sealed by
``aurora db upgrade`` (:func:`seal_plaintext`) and, until then, still read as they are.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select, text

from ..db import Database
from ..errors import ConfigError
from ..models import Node

#: marks a sealed value; anything else in ``nodes.token`` is a plaintext token from before
PREFIX = "fernet:"


class VaultError(ConfigError):
    """Raised when the token key is unusable, or a sealed token does not open with it."""

    code = "federation_key_error"


def _read(path: Path) -> Fernet:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise VaultError(f"{path} is readable by group or others (mode {stat.S_IMODE(mode):03o}); "
                         f"run: chmod 600 {path}")
    try:
        return Fernet(path.read_bytes().strip())
    except ValueError:
        raise VaultError(f"{path} does not hold a Fernet key") from None


def load_or_create(path: Path) -> Fernet:
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path)
    with os.fdopen(fd, "wb") as out:
        out.write(Fernet.generate_key() + b"\n")
        out.flush()
        os.fsync(out.fileno())
    return _read(path)


def seal(path: Path, token: str) -> str:
    return PREFIX + load_or_create(path).encrypt(token.encode("utf-8")).decode("ascii")


def open_token(path: Path, stored: str) -> str:
    if not stored.startswith(PREFIX):
        return stored  # from before tokens were sealed; ``aurora db upgrade`` seals it
    try:
        return load_or_create(path).decrypt(stored[len(PREFIX):].encode("ascii")).decode("utf-8")
    except InvalidToken:
        raise VaultError(f"a peer's token does not open with {path} (another node's key file, or edited); "
                         "register the peer again") from None


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

"""The audit chain's key: 32 random bytes in a file outside the database.

Whoever can write the database can rewrite ``audit_records`` and recompute a plain hash chain;
they cannot recompute an HMAC chain without this key. So the key lives under ``AURORA_HOME``
(or ``AURORA_AUDIT_KEY_FILE``), mode 0600, created on first use, and is backed up apart from the
database (``docs/operations.md``). Every machine that writes audit records needs the same file.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from .errors import AuditKeyError

#: bytes of randomness in a new key (the HMAC-SHA256 block size allows up to 64)
KEY_BYTES = 32


def _read(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AuditKeyError(f"{path} is readable by group or others (mode {stat.S_IMODE(mode):03o}); "
                            f"run: chmod 600 {path}")
    text = path.read_text("ascii").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise AuditKeyError(f"{path} does not hold a hex audit key") from None
    if len(key) < 16:
        raise AuditKeyError(f"{path} holds a key shorter than 16 bytes")
    return key


def load(path: Path) -> bytes | None:
    """The key, or None when the file does not exist (verifying must never create one)."""
    try:
        return _read(path)
    except FileNotFoundError:
        return None


def load_or_create(path: Path) -> bytes:
    """The key, made on first use. ``O_EXCL`` lets exactly one of several processes create it."""
    key = load(path)
    if key is not None:
        return key
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its key
        return _read(path)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(secrets.token_hex(KEY_BYTES) + "\n")
        out.flush()
        os.fsync(out.fileno())
    return _read(path)

"""Values a database dump alone must not reveal: encrypted with Fernet (AES-128-CBC +
HMAC-SHA256, from ``cryptography``) under a key file under ``AURORA_HOME``, made on first use
with mode 0600 and refused when group or others may read it. Stored as ``fernet:`` and the
Fernet token. A key file is in neither the database nor ``aurora secrets backup``: back it up
apart, like the audit key (docs/operations.md).

Two kinds of value are sealed, each under a key file of its own: a webhook trigger's secret
(``definitions.key``, ``triggers.py``) and the tokens this node presents to its federation peers
(``federation_tokens.key``, ``federation/vault.py``).
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from .errors import ConfigError

PREFIX = "fernet:"
#: what to do about a value that cannot be opened, unless the caller says otherwise
ROTATE_SECRET = "rotate the secret: aurora workflows secret NAME"


class SealError(ConfigError):
    code = "sealed_value_error"


def _create(path: Path) -> None:
    """Make the key file, whole or not at all: written under a temporary name and linked into
    place (``link`` never replaces a file), so no process ever reads a half-written key and, of two
    processes creating it at once, one key wins and both use it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(Fernet.generate_key() + b"\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process made it first: its key is the one
    finally:
        os.unlink(temporary)


def key(path: Path, create: bool = True, remedy: str = ROTATE_SECRET) -> Fernet:
    """The key in ``path``, made first if ``create`` and the file is missing."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if not create:  # opening needs the key that sealed it: a new one would open nothing
            raise SealError(f"{path} is missing (restore it from its backup, or {remedy})") from None
        _create(path)
        mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SealError(f"{path} is readable by group or others (mode {stat.S_IMODE(mode):03o}); run: chmod 600 {path}")
    try:
        return Fernet(path.read_bytes().strip())
    except ValueError:
        raise SealError(f"{path} does not hold a Fernet key") from None


def seal(path: Path, value: str) -> str:
    return PREFIX + key(path).encrypt(value.encode("utf-8")).decode("ascii")


def unseal(path: Path, stored: str, remedy: str = ROTATE_SECRET) -> str:
    """The value ``seal`` sealed; SealError saying what to do (``remedy``) when it cannot be had."""
    if not stored.startswith(PREFIX):
        raise SealError("a sealed value is not in the expected form")
    try:
        return key(path, create=False, remedy=remedy).decrypt(stored[len(PREFIX):].encode("ascii")).decode("utf-8")
    except InvalidToken:
        raise SealError(f"a sealed value does not open with {path} (another node's key file, or edited?); "
                        f"{remedy}") from None

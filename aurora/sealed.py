"""Values a database dump alone must not reveal (a webhook trigger's secret): encrypted with
Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) under a key file under ``AURORA_HOME``,
made on first use with mode 0600. Back the key file up with the secrets (``aurora secrets backup``)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from .errors import ConfigError

PREFIX = "fernet:"


class SealError(ConfigError):
    code = "sealed_value_error"


def _key(path: Path, create: bool = True) -> Fernet:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if not create:  # opening needs the key that sealed it: a new one would open nothing
            raise SealError(f"{path} is missing (restore it from the secrets backup, or rotate the secret: "
                            "aurora workflows secret NAME)") from None
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(Fernet.generate_key() + b"\n")
                out.flush()
                os.fsync(out.fileno())
        except FileExistsError:
            pass
        mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SealError(f"{path} is readable by group or others (mode {stat.S_IMODE(mode):03o}); run: chmod 600 {path}")
    try:
        return Fernet(path.read_bytes().strip())
    except ValueError:
        raise SealError(f"{path} does not hold a Fernet key") from None


def seal(path: Path, value: str) -> str:
    return PREFIX + _key(path).encrypt(value.encode("utf-8")).decode("ascii")


def unseal(path: Path, stored: str) -> str:
    if not stored.startswith(PREFIX):
        raise SealError("a sealed value is not in the expected form")
    try:
        return _key(path, create=False).decrypt(stored[len(PREFIX):].encode("ascii")).decode("utf-8")
    except InvalidToken:
        raise SealError(f"a sealed value does not open with {path} (another node's key file?); "
                        "rotate the secret: aurora workflows secret NAME") from None

"""Encrypted backups of the secrets file and the audit key (the seed's checklist asks for one).

A backup is one JSON file: the scrypt parameters and salt, a nonce, and the AES-256-GCM
ciphertext of the secrets file and the audit key, all from the ``cryptography`` library. GCM
authenticates the ciphertext and, as associated data, the header: a wrong passphrase and a file
changed by one bit are both refused, and a refused restore writes nothing.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from .errors import BackupError

FORMAT = "aurora-secrets-backup"
#: scrypt cost: 2**15 with r=8 takes about 0.1 s and 32 MiB, the interactive setting of its paper
SCRYPT = {"n": 2**15, "r": 8, "p": 1}
#: the most a backup's header may ask of scrypt: the header is not trusted before the tag is
#: checked, and the tag can only be checked after deriving (huge values panic in the KDF, or take
#: hours and terabytes); 2**20 with r=8 is 1 GiB
SCRYPT_MAX = {"n": 2**20, "r": 16, "p": 4}


def _key(passphrase: str, salt: bytes, params: dict[str, int]) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=32, n=params["n"], r=params["r"], p=params["p"]).derive(passphrase.encode("utf-8"))


def _header(params: dict[str, int], salt: bytes, nonce: bytes) -> dict[str, Any]:
    return {"format": FORMAT, "version": 1, "kdf": "scrypt", **params, "cipher": "AES-256-GCM",
            "salt": base64.b64encode(salt).decode(), "nonce": base64.b64encode(nonce).decode()}


def _aad(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _write_private(path: Path, data: str) -> None:
    """Write ``data`` to ``path`` mode 0600, whole or not at all (a temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


#: how old the newest backup may be before ``aurora doctor`` warns
RECENT_DAYS = 30


def make(secrets_file: Path, audit_key_file: Path, passphrase: str, output: Path,
         record: Path | None = None) -> dict[str, bool]:
    """Encrypt the secrets file and the audit key (those that exist) into ``output``; note when
    and where in ``record`` (for ``aurora doctor``: the backup itself should be elsewhere)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if len(passphrase) < 12:
        raise BackupError("the passphrase must have at least 12 characters")
    contents = {name: path.read_text("utf-8") if path.exists() else None
                for name, path in (("secrets", secrets_file), ("audit_key", audit_key_file))}
    if not any(contents.values()):
        raise BackupError(f"nothing to back up: neither {secrets_file} nor {audit_key_file} exists")
    salt, nonce = os.urandom(16), os.urandom(12)
    header = _header(SCRYPT, salt, nonce)
    sealed = AESGCM(_key(passphrase, salt, SCRYPT)).encrypt(nonce, json.dumps(contents).encode("utf-8"), _aad(header))
    _write_private(output, json.dumps({**header, "ciphertext": base64.b64encode(sealed).decode()}) + "\n")
    if record is not None:
        _write_private(record, json.dumps({"at": time.time(), "file": str(output.absolute())}) + "\n")
    return {name: value is not None for name, value in contents.items()}


def freshness(record: Path, secrets_file: Path, audit_key_file: Path) -> str | None:
    """None when the newest backup is recent and newer than both files, else what is wrong."""
    try:
        made = float(json.loads(record.read_text("utf-8"))["at"])
    except (OSError, ValueError, KeyError, TypeError):
        return "no encrypted backup of the secrets file and the audit key was made here"
    if time.time() - made > RECENT_DAYS * 86400:
        return f"the newest encrypted backup is older than {RECENT_DAYS} days"
    changed = [p.name for p in (secrets_file, audit_key_file) if p.exists() and p.stat().st_mtime > made]
    if changed:
        return f"{', '.join(changed)} changed after the newest encrypted backup"
    return None


def restore(backup: Path, passphrase: str, secrets_file: Path, audit_key_file: Path) -> dict[str, bool]:
    """Decrypt ``backup`` and write the secrets file and the audit key back, mode 0600.

    An audit key that exists and differs is never overwritten: the chain written with it would no
    longer verify. Nothing is written unless everything checks out.
    """
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        body = json.loads(backup.read_text("utf-8"))
        header = {k: v for k, v in body.items() if k != "ciphertext"}
        if header.get("format") != FORMAT or header.get("version") != 1:
            raise ValueError("not an Aurora secrets backup")
        params = {k: int(header[k]) for k in ("n", "r", "p")}
        if any(not 1 <= params[k] <= SCRYPT_MAX[k] for k in params) or params["n"] < 2 or params["n"] & (params["n"] - 1):
            raise BackupError(f"{backup}: its scrypt parameters {params} are beyond what Aurora writes "
                              f"(at most {SCRYPT_MAX}, n a power of 2): the file was changed; nothing restored")
        salt, nonce = base64.b64decode(header["salt"]), base64.b64decode(header["nonce"])
        sealed = base64.b64decode(body["ciphertext"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BackupError(f"{backup}: cannot read the backup ({exc.__class__.__name__})") from None
    try:
        plain = AESGCM(_key(passphrase, salt, params)).decrypt(nonce, sealed, _aad(header))
    except (InvalidTag, ValueError):
        raise BackupError(f"{backup}: wrong passphrase, or the file was changed; nothing restored") from None
    contents = json.loads(plain)
    key = contents.get("audit_key")
    if key and audit_key_file.exists() and audit_key_file.read_text("utf-8").strip() != key.strip():
        raise BackupError(f"{audit_key_file} exists and holds another audit key; move it away first "
                          "(the chain written with it would no longer verify); nothing restored")
    if contents.get("secrets") is not None:
        _write_private(secrets_file, contents["secrets"])
    if key and not audit_key_file.exists():
        _write_private(audit_key_file, key)
    return {"secrets": contents.get("secrets") is not None, "audit_key": bool(key)}

"""This node's identity: an Ed25519 key pair in a file under ``AURORA_HOME``, mode 0600.

The private key (made and stored with ``cryptography``; signing and verifying use libsodium
through PyNaCl, which does the same Ed25519 faster) signs every event this node is the origin of
(``signing.py``) and the introductions of other origins' keys it passes on; the public key is what peers pin when they
register this node. The key is made on first start; like the audit key it is backed up apart
from the database, and every process of one node needs the same file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import stat
from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import BadSignatureError, CryptoError

from ..errors import ConfigError

#: how a public key is written: the algorithm, then the 32 raw bytes in URL-safe base64
KEY_PREFIX = "ed25519:"
#: what a node may be called (and so what an origin may be): letters, digits, _ . -, at most 64
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class IdentityError(ConfigError):
    """Raised when this node's key file is unusable (unreadable, too open, not an Ed25519 key)."""

    code = "identity_error"


def _read(path: Path) -> Ed25519PrivateKey:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(f"{path} is readable by group or others (mode {stat.S_IMODE(mode):03o}); "
                            f"run: chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except ValueError:
        raise IdentityError(f"{path} does not hold a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"{path} holds a key that is not Ed25519")
    return key


def load_or_create(path: Path) -> Ed25519PrivateKey:
    """The node's private key, made on first use. ``O_EXCL``: exactly one process creates it."""
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its key
        return _read(path)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
        out.flush()
        os.fsync(out.fileno())
    return _read(path)


def encode(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


@lru_cache(maxsize=1024)
def decode(text: str) -> Ed25519PublicKey:
    """A public key from its text form; ValueError saying what is wrong."""
    if not isinstance(text, str) or not text.startswith(KEY_PREFIX):
        raise ValueError(f"a public key starts with {KEY_PREFIX!r}")
    body = text[len(KEY_PREFIX):]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("the public key is not URL-safe base64") from None
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def fingerprint(text: str) -> str:
    """A short form to compare out of band: the first 80 bits of the key's SHA-256, in groups of 4."""
    digest = hashlib.sha256(raw(decode(text))).hexdigest()[:20]
    return ":".join(digest[i:i + 4] for i in range(0, 20, 4))


def encode_signature(signature: bytes) -> str:
    return base64.urlsafe_b64encode(signature).decode("ascii").rstrip("=")


def raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def valid(public: Ed25519PublicKey | bytes, signature: str, message: bytes) -> bool:
    """Does ``signature`` (text form) verify ``message`` under ``public`` (a key, or its 32 raw
    bytes)? Never raises.

    Verifying is libsodium's (PyNaCl, like ``cryptography`` a PyCA library): two to three times
    faster than OpenSSL's Ed25519 here, and it is what bounds replication (one verification per
    event stored); it also refuses non-canonical signatures and small-order keys.
    """
    if not isinstance(signature, str) or len(signature) != 86:  # 64 bytes, unpadded base64
        return False
    try:
        decoded = base64.urlsafe_b64decode(signature + "==")
        # Python's base64 is lenient (the standard alphabet's + and / pass, the last character's
        # 4 unused bits are ignored): only the one way of writing these bytes is a signature,
        # or a relay could store and serve another string for the origin's signature
        if encode_signature(decoded) != signature:
            return False
        crypto_sign_open(decoded + message, public if isinstance(public, bytes) else raw(public))
    except (BadSignatureError, CryptoError, binascii.Error, ValueError, TypeError):
        return False
    return True


class Identity:
    """This node's name and key pair, loaded once per process."""

    def __init__(self, name: str, path: Path):
        self.name = name
        self.path = path
        self.private = load_or_create(path)
        self.public_key = encode(self.private.public_key())
        self.fingerprint = fingerprint(self.public_key)
        # libsodium signs the same (Ed25519 is deterministic) in about half OpenSSL's time, and
        # every event served to a peer is signed
        seed = self.private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                          serialization.NoEncryption())
        self._sodium_secret = crypto_sign_seed_keypair(seed)[1]

    def sign(self, message: bytes) -> str:
        return encode_signature(crypto_sign(message, self._sodium_secret)[:64])

    def as_dict(self) -> dict[str, str]:
        return {"node": self.name, "public_key": self.public_key, "fingerprint": self.fingerprint,
                "algorithm": "ed25519"}

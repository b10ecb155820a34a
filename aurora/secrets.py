"""external_secrets.json: permission check, placeholders, environment overrides, redaction.

The file is refused if group or others may read it (``chmod 600``). A value that still contains
``PLACEHOLDER`` means "not configured". ``AURORA_SECRET_<SECTION>_<KEY>`` environment variables
override the file (``AURORA_SECRET_MAILGUN_API_KEY``, ``AURORA_SECRET_SOCIAL_FACEBOOK_ACCESS_TOKEN``,
``AURORA_SECRET_ENGINES__GPT5_GENIUS__API_KEY`` — a double underscore separates every level).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from .errors import SecretsError

PLACEHOLDER = "PLACEHOLDER"
REDACTED = "[REDACTED]"
ENV_PREFIX = "AURORA_SECRET_"
#: keys whose values are not secret (they identify, they do not authenticate)
#: credential prefixes that say what kind of key it is, not which one (shown in fingerprints)
_PUBLIC_PREFIXES = ("sk_live_", "sk_test_", "rk_live_", "rk_test_", "key-")
PUBLIC_KEYS = frozenset({"domain", "from", "form_id", "page_id", "account_id", "publishable_key", "region", "base_url"})


def _flatten(data: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _flatten(value, (*prefix, str(key)))
    else:
        yield prefix, data


@dataclass(frozen=True)
class Secrets:
    """Loaded secrets. ``get`` gives None for anything missing or still a placeholder."""

    values: dict[tuple[str, ...], str] = field(default_factory=dict)
    #: the file was not there (only environment overrides, if any, were read)
    file_missing: bool = False

    def get(self, *path: str) -> str | None:
        value = self.values.get(tuple(path))
        if value is None or PLACEHOLDER in value or value == "":
            return None
        return value

    def configured(self, *path: str) -> bool:
        return self.get(*path) is not None

    def fingerprint(self, *path: str) -> str | None:
        """An id of the credential at ``path`` that says whether it is the same one, never what it
        is: HMAC-SHA256 keyed with the credential itself over a fixed label (a key check value),
        shortened; a known public prefix (Stripe's ``sk_live_``) is kept for the reader. None if
        not configured. Votes bind it (``aurora.binding``): a swapped key voids them."""
        value = self.get(*path)
        if value is None:
            return None
        digest = hmac.new(value.encode("utf-8"), b"aurora credential fingerprint v1", hashlib.sha256).hexdigest()
        prefix = next((p for p in _PUBLIC_PREFIXES if value.startswith(p)), "")
        return f"{prefix}… id {digest[:16]}" if prefix else f"id {digest[:16]}"

    def secret_values(self) -> list[str]:
        """Every value that must never be shown, and its usual encodings, longest first."""
        return list(self._forms)

    @cached_property
    def _forms(self) -> tuple[str, ...]:
        # made once per loaded file: every run's redaction asks for it
        found = {v for k, v in self.values.items() if k[-1] not in PUBLIC_KEYS and v and PLACEHOLDER not in v}
        return tuple(sorted({form for v in found if len(v) >= 4 for form in encodings(v)}, key=len, reverse=True))

    def redact(self, value: Any) -> Any:
        """A copy of ``value`` with every secret replaced by ``[REDACTED]``."""
        secrets = self.secret_values()
        if not secrets:
            return value
        return _redact(value, secrets)


#: how many base64 characters a secret's own encoding must keep to be worth looking for
_MIN_CORE = 8


def encodings(secret: str) -> set[str]:
    """The secret and the forms it takes on the wire: URL-encoded, and base64 — alone or inside
    ``user:secret`` (HTTP Basic auth; a provider that echoes its Authorization header put
    ``base64("api:" + key)`` into errors).

    Base64 encodes 3 bytes as 4 characters, so what the secret turns into depends on where it
    starts within a 3-byte group: for each of the 3 offsets, the characters that depend on the
    secret's bytes alone are looked for. Redacting them hides all but a few bits at its edges.
    """
    forms = {secret, quote(secret, safe=""), quote_plus(secret, safe="")}
    raw = secret.encode("utf-8")
    for offset, skip in ((0, 0), (1, 2), (2, 3)):
        shifted = b"\0" * offset + raw
        whole = len(shifted) // 3 * 4  # only complete groups: what follows the secret varies
        for encoded in (base64.b64encode(shifted), base64.urlsafe_b64encode(shifted)):
            core = encoded[skip:whole].decode("ascii")
            if len(core) >= _MIN_CORE:
                forms.add(core)
    return forms


def _redact(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {k: _redact(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact(v, secrets) for v in value]
    return value


def _env_path(rest: str) -> tuple[str, ...]:
    """``ENGINES__GPT5_GENIUS__API_KEY`` splits on ``__``; without it, ``MAILGUN_API_KEY`` splits
    into section and key, and ``SOCIAL_FACEBOOK_ACCESS_TOKEN`` into section, platform and key."""
    if "__" in rest:
        return tuple(rest.split("__"))
    section, _, key = rest.partition("_")
    if section == "social":
        platform, _, leaf = key.partition("_")
        return (section, platform, leaf)
    return (section, key)


def load_secrets(path: Path, environ: dict[str, str] | None = None) -> Secrets:
    """Read the file (if any) and apply environment overrides."""
    env = os.environ if environ is None else environ
    values: dict[tuple[str, ...], str] = {}
    missing = not path.exists()
    if not missing:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretsError(
                f"{path} is readable by group or others (mode {stat.S_IMODE(mode):03o}); run: chmod 600 {path}"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise SecretsError(f"{path}: cannot read secrets: {exc.__class__.__name__}") from None
        if not isinstance(data, dict):
            raise SecretsError(f"{path}: must be a JSON object of sections")
        for key, value in _flatten(data):
            if not isinstance(value, str):
                raise SecretsError(f"{path}: {'.'.join(key)} must be a string")
            values[key] = value
    for name, value in env.items():
        if name.startswith(ENV_PREFIX) and value:
            values[_env_path(name[len(ENV_PREFIX):].lower())] = value
    return Secrets(values, file_missing=missing)


class SecretsFile:
    """One secrets file, read again only when it changed; ``AURORA_SECRET_*`` overrides are
    taken from the environment the process started with.

    Every run needs the secrets; re-reading and re-parsing the file each time cost more than a
    third of a dry-run run's own work. A ``stat`` tells whether anything changed (an edit or a
    ``chmod`` changes its ctime), so edits still take effect at the next run.
    """

    def __init__(self, path: Path):
        self.path = path
        self._environ = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}
        self._lock = threading.Lock()
        self._seen: tuple[Any, ...] | None = None
        self._secrets: Secrets | None = None

    def load(self) -> Secrets:
        try:
            st = self.path.stat()
            signature: tuple[Any, ...] | None = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)
        except FileNotFoundError:
            signature = None
        except OSError as exc:  # e.g. a folder on the way that this user may not enter
            raise SecretsError(f"{self.path}: cannot read secrets: {exc.strerror or exc.__class__.__name__}") from None
        with self._lock:
            if self._secrets is None or signature != self._seen:
                self._secrets = None
                # a broken file raises every time: it is never cached
                self._secrets = load_secrets(self.path, self._environ)
                self._seen = signature
            return self._secrets

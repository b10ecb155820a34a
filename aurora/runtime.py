"""One process's wiring: settings, database, policy store, secrets and engine, built once."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from .config import Settings, load_settings

if TYPE_CHECKING:  # the parts load on first use: beat and gunicorn's master need few of them
    from .db import Database
    from .engine import Engine
    from .federation.identity import Identity
    from .policy import PolicyStore
    from .ratelimit import RateLimiter
    from .secrets import Secrets, SecretsFile


@dataclass
class Runtime:
    settings: Settings
    _secret_values: list[str] = field(default_factory=list, repr=False)
    _secret_values_at: float = field(default=-1e9, repr=False)

    def __post_init__(self) -> None:
        from .metrics import prepare

        prepare(self.settings.home)

    @cached_property
    def db(self) -> Database:
        from .db import Database
        from .notify import publisher_for

        db = Database(self.settings.database_url, self.settings.audit_key_path)
        db.on_commit = publisher_for(self.settings)  # waiting clients hear of each committed change
        return db

    @cached_property
    def policies(self) -> PolicyStore:
        from . import policy_ledger
        from .policy import PolicyStore

        store = PolicyStore(self.settings.policy_file)
        # Only a process with a runtime holds the database: it is what puts each reload in the chain.
        store.listeners.append(policy_ledger.listener(self.db, str(self.settings.policy_file)))
        return store

    @cached_property
    def identity(self) -> Identity:
        """This node's federation key pair (``federation/identity.py``), made on first use."""
        from .federation.identity import Identity

        return Identity(self.settings.node_name, self.settings.identity_key_path)

    def secrets(self) -> Secrets:
        return self._secrets_file.load()

    @cached_property
    def _secrets_file(self) -> SecretsFile:
        from .secrets import SecretsFile

        return SecretsFile(self.settings.secrets_file)

    def secret_values(self) -> list[str]:
        """The values logs must never show; re-read at most every 10 s, never raising."""
        now = time.monotonic()
        if now - self._secret_values_at > 10:
            try:
                self._secret_values = self.secrets().secret_values()
            except Exception:  # noqa: BLE001 - a broken secrets file must not break logging
                self._secret_values = []
            self._secret_values_at = now
        return self._secret_values

    @cached_property
    def engine(self) -> Engine:
        from .engine import Engine

        return Engine(self.settings, self.db, self.policies, self.secrets, self.limiter)

    @cached_property
    def limiter(self) -> RateLimiter:
        from .ratelimit import RateLimiter

        return RateLimiter(self.settings)


_current: Runtime | None = None
_lock = threading.Lock()


def get_runtime() -> Runtime:
    """The process-wide runtime, built from the environment on first use."""
    global _current
    with _lock:
        if _current is None:
            _current = Runtime(load_settings())
        return _current


def has_runtime() -> bool:
    """Whether this process has its runtime already (built, or set by whoever embeds Aurora)."""
    return _current is not None


def set_runtime(runtime: Runtime | None) -> None:
    global _current
    with _lock:
        _current = runtime

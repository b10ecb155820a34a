"""One process's wiring: settings, database, policy store, secrets and engine, built once."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property

from .config import Settings, load_settings
from .db import Database
from .engine import Engine
from .policy import PolicyStore
from .ratelimit import RateLimiter
from .secrets import Secrets, load_secrets


@dataclass
class Runtime:
    settings: Settings

    @cached_property
    def db(self) -> Database:
        return Database(self.settings.database_url)

    @cached_property
    def policies(self) -> PolicyStore:
        return PolicyStore(self.settings.policy_file)

    def secrets(self) -> Secrets:
        return load_secrets(self.settings.secrets_file)

    @cached_property
    def engine(self) -> Engine:
        return Engine(self.settings, self.db, self.policies, self.secrets, self.limiter)

    @cached_property
    def limiter(self) -> RateLimiter:
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


def set_runtime(runtime: Runtime | None) -> None:
    global _current
    with _lock:
        _current = runtime

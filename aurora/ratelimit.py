"""Per-adapter rate limits from the policy, shared by every worker process through Redis.

With the embedded (filesystem) broker there is no Redis: each process then keeps its own window
and takes an equal share of the limit (the limit divided by ``AURORA_WORKER_CONCURRENCY``), so
the total stays within it.
"""

from __future__ import annotations

import threading
import time
from functools import cache

from limits import parse
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from .config import Settings


class RateLimiter:
    def __init__(self, settings: Settings):
        shared = settings.broker_url.startswith(("redis://", "rediss://"))
        self.storage = storage_from_string(settings.broker_url) if shared else MemoryStorage()
        self.share = 1 if shared else settings.worker_concurrency
        self.limiter = MovingWindowRateLimiter(self.storage)
        self._lock = threading.Lock()
        #: seconds spent waiting, per adapter (for metrics)
        self.waited: dict[str, float] = {}

    def acquire(self, adapter: str, rate: str | None, timeout: float = 120.0) -> float:
        """Block until one call of ``adapter`` fits its rate; return the seconds waited."""
        if not rate:
            return 0.0
        item = _item(rate, self.share)
        started = time.monotonic()
        while not self.limiter.hit(item, "aurora", adapter):
            reset, _ = self.limiter.get_window_stats(item, "aurora", adapter)
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"rate limit of {adapter} ({rate}) not free after {timeout:.0f} s")
            time.sleep(min(max(reset - time.time(), 0.01), 1.0))
        waited = time.monotonic() - started
        from .metrics import rate_limit_waited

        rate_limit_waited(adapter, waited)
        with self._lock:
            self.waited[adapter] = self.waited.get(adapter, 0.0) + waited
        return waited


@cache
def _item(rate: str, share: int):  # type: ignore[no-untyped-def]
    item = parse(rate)
    if share > 1:
        item = type(item)(max(item.amount // share, 1), item.multiples)
    return item

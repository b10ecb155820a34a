"""Sign-in throttling for the approval page: per client address and per key id, with the
``limits`` library's moving window (in Redis when the broker is Redis, so every web process
shares it; otherwise per process)."""

from __future__ import annotations

import math
import time
from typing import Any

from limits import RateLimitItemPerMinute
from limits.strategies import MovingWindowRateLimiter

#: sign-in attempts a client address may make per minute
PER_CLIENT = RateLimitItemPerMinute(10)
#: sign-in attempts for one key id per minute, from anywhere
PER_KEY = RateLimitItemPerMinute(5)


class SignInThrottle:
    def __init__(self, storage: Any):
        self.limiter = MovingWindowRateLimiter(storage)

    def attempt(self, client: str, key_id: str | None) -> int:
        """Count one attempt; 0 if it may go on, else the seconds until the next one may."""
        checks = [(PER_CLIENT, "client", client)] + ([(PER_KEY, "key", key_id)] if key_id else [])
        wait = 0
        for item, kind, who in checks:
            if not self.limiter.hit(item, "aurora-signin", kind, who):
                reset, _ = self.limiter.get_window_stats(item, "aurora-signin", kind, who)
                wait = max(wait, max(1, math.ceil(reset - time.time())))
        return wait

"""One live HTTP call with the house rules: the adapter's rate limit, retries with backoff on
429 (after ``Retry-After``), 5xx and connection failures, and failures classified.

A request that may have reached the provider before the connection broke (a read timeout) is
*ambiguous*: it is never re-sent here, since the provider may already have acted on it.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

from .base import CallContext, LiveCallFailed, RetryLater

#: the longest Retry-After honoured (``adapters.<name>.max_retry_after_seconds``): a run is put
#: back in the queue for then; a longer one fails the call as "throttled", not an adapter fault
MAX_RETRY_AFTER = 300.0
#: a Retry-After up to this is slept in the worker: shorter than a trip through the broker
INLINE_RETRY_AFTER = 1.0

if TYPE_CHECKING:  # imported by the first live call: a worker that only simulates never loads it (~7 MB)
    import requests


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


def never_sent(exc: requests.RequestException) -> bool:
    """True when the request surely did not reach the provider (no connection was made)."""
    import requests

    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError) and not isinstance(exc, requests.ReadTimeout):
        text = repr(exc)
        return "NewConnectionError" in text or "Connection refused" in text or "NameResolutionError" in text
    return False


def _backoff(attempt: int) -> float:
    return min(0.5 * 2**attempt, 8.0) * (0.5 + random.random())  # noqa: S311 - jitter, not security


def body_of(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
        return body if isinstance(body, dict) else {"body": body}
    except ValueError:
        return {"body": response.text[:500]}


def call(adapter: str, ctx: CallContext, method: str, url: str, *, classify: Any = None, **kwargs: Any) -> dict[str, Any]:
    """Make the call and return the JSON body, or raise :class:`LiveCallFailed`.

    ``classify(status, body)`` may name a failure kind for a 4xx answer (default: 401/403 are
    ``auth``, others ``invalid``).
    """
    import requests

    settings = ctx.settings(adapter)
    retries = int(settings.get("retries", 2))
    timeout = float(settings.get("timeout_seconds", 30))
    ceiling = float(settings.get("max_retry_after_seconds", MAX_RETRY_AFTER))
    last, made = "", 0
    for attempt in range(retries + 1):
        made = attempt + 1
        ctx.wait_for_rate(adapter)
        try:
            response = requests.request(method, url, timeout=timeout, **kwargs)
        except requests.RequestException as exc:
            if not never_sent(exc):
                raise LiveCallFailed("the connection broke after the request was sent; it may have been acted on",
                                     "ambiguous") from None
            last = exc.__class__.__name__
            time.sleep(_backoff(attempt))
            continue
        if response.status_code < 400:
            return body_of(response)
        body = body_of(response)
        kind = classify(response.status_code, body) if classify else None
        if kind is None:
            if response.status_code == 429 or response.status_code >= 500:
                kind = "retry"
            elif response.status_code in (401, 403):
                kind = "auth"
            else:
                kind = "invalid"
        if kind != "retry":
            raise LiveCallFailed(f"HTTP {response.status_code}", kind, body)
        last = f"HTTP {response.status_code}"
        wait = _retry_after(response)
        if wait is not None and wait > ceiling:
            # The provider is up and asks us to come back later: that says nothing about the
            # adapter, so it must not roll it back for every later run ("throttled" is no fault).
            raise LiveCallFailed(
                f"the provider asked to wait {wait:.0f} s (Retry-After), more than the {ceiling:.0f} s Aurora "
                f"waits for (adapters.{adapter}.max_retry_after_seconds); not tried again", "throttled", body)
        if wait is not None and wait > INLINE_RETRY_AFTER and ctx.run_id is not None:
            # No worker sleeps minutes: the engine queues the run again for then (aurora.deferral).
            raise RetryLater(f"the provider asked to wait {wait:.0f} s (Retry-After)", wait, body)
        if attempt < retries:
            time.sleep(wait if wait is not None else _backoff(attempt))
    raise LiveCallFailed(f"unavailable after {made} attempt{'s' if made > 1 else ''} ({last})", "unavailable")

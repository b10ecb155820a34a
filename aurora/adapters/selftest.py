"""The seed's "test each adapter alone, dry run first": a simulated call of each adapter (audited
like every ad-hoc call, ``aurora.adapters.adhoc``), a check of its configuration, and what would
happen live. ``aurora adapters test [NAME]`` and
``python -m aurora.adapters.stripe_adapter`` print it."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from . import adhoc
from .base import ALLOW_FLAGS, CallContext, decide_mode
from .context import default_context

#: a sample payload per adapter, the same shape a workflow's payload has
SAMPLES: dict[str, dict[str, Any]] = {
    "stripe": {"customer": "cus_123", "amount": "150.00", "currency": "EUR", "description": "Aurora self-test"},
    "mailgun": {"to": "kunde@example.com", "subject": "Aurora self-test", "text": "Hallo"},
    "typeform": {},
    "social": {"platform": "facebook", "content": "Aurora self-test"},
    "engine": {"engine": "gpt5_genius", "text": "Aurora self-test"},
}


def canary_probe_id() -> str:
    """A run id inside every canary share (its bucket is 0)."""
    from .base import canary_bucket

    return next(f"probe-{i}" for i in range(10_000) if canary_bucket(f"probe-{i}") == 0)


def check(name: str, ctx: CallContext | None = None) -> dict[str, Any]:
    """Simulate one call and report what a live call would do, and what is missing for it."""
    from . import BY_NAME

    ctx = ctx or default_context()
    adapter = BY_NAME[name]
    payload = SAMPLES[name]
    configured = adapter.credentials_configured(payload, ctx.secrets)
    # an ad-hoc call like the seed's functions: simulated, its own idempotency key, audited
    simulated = adhoc.call(adapter, payload, ctx)
    live_run = replace(ctx, run_id=canary_probe_id())
    would = decide_mode(name, live_run, configured, adapter.live_capable)
    problems = []
    if not configured:
        problems.append("secrets missing or still PLACEHOLDER")
    flag = ALLOW_FLAGS.get(name)
    if flag and not ctx.policy.data.get(flag):
        problems.append(f"policy: {flag} is false")
    return {
        "adapter": name,
        "simulated_call": {"ok": True, "msg": simulated["msg"], "request": simulated["request"],
                           "audit": simulated["audit"]},
        "live_now": {"live": would.live, "reason": would.reason},
        "missing_for_live": problems,
        "settings": ctx.policy.adapter(name),
    }


def main(name: str) -> None:
    print(json.dumps(check(name), indent=2, ensure_ascii=False))

"""The adapter layer's own overhead per simulated call, beside a bare function call that builds
the same request dict (goal: under 1 ms per call)."""

from __future__ import annotations

import time
from typing import Any

from harness import ROOT


def overhead(n: int = 20_000) -> dict[str, Any]:
    from aurora.adapters import CallContext
    from aurora.adapters.mailgun_adapter import MailgunAdapter
    from aurora.policy import parse_policy
    from aurora.secrets import Secrets

    policy = parse_policy((ROOT / "policy" / "batch8_policy.json").read_text())
    ctx = CallContext("bench-run", policy, Secrets())
    adapter = MailgunAdapter()
    payload = {"to": "kunde@example.com", "subject": "Bericht", "template": "monthly_report",
               "variables": {"monat": "Oktober"}}

    def bare(p: dict[str, Any]) -> dict[str, Any]:
        return {"dry_run": True, "msg": "Simulated mail send",
                "request": {"url": "https://api.mailgun.net/v3/mg.example.com/messages",
                            "form": {"to": [p["to"]], "subject": p["subject"], "template": p["template"]}}}

    def per_call_us(fn: Any) -> float:
        for _ in range(1000):
            fn()
        started = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - started) / n * 1e6

    ours = per_call_us(lambda: adapter.call(payload, ctx).as_dict())
    base = per_call_us(lambda: bare(payload))
    return {"adapter_us": round(ours, 1), "bare_us": round(base, 2), "overhead_us": round(ours - base, 1),
            "goal": "< 1000 us per call"}

"""What every adapter shares: one request description, one mode decision, simulated results.

An adapter turns a payload into the exact request it would send (``build``), with credentials
shown as ``[REDACTED]``: the description is safe to store, log and return. Whether the call is
live or simulated is decided by :func:`decide_mode` alone, and the reason travels with the
result into the audit record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..policy import Policy
from ..secrets import REDACTED, Secrets


@dataclass(frozen=True)
class CallContext:
    """What an adapter may know about the call besides its payload."""

    run_id: str | None
    policy: Policy
    secrets: Secrets
    simulated_latency_ms: int = 0
    #: AI-engine cool-down state shared by all processes (None outside a run)
    health: Any = None

    def idempotency_key(self, adapter: str, operation: str) -> str:
        return f"aurora-{self.run_id or 'adhoc'}-{adapter}-{operation}"


@dataclass(frozen=True)
class Mode:
    live: bool
    reason: str

    @property
    def name(self) -> str:
        return "live" if self.live else "simulated"


@dataclass
class AdapterResult:
    """What an adapter call returns; ``as_dict`` is the seed's shape plus the request."""

    adapter: str
    operation: str
    mode: Mode
    msg: str
    request: dict[str, Any]
    response: dict[str, Any] | None = None
    ok: bool = True
    duration_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dry_run": not self.mode.live,
            "msg": self.msg,
            "adapter": self.adapter,
            "operation": self.operation,
            "mode": self.mode.name,
            "reason": self.mode.reason,
            "request": self.request,
        }
        if self.response is not None:
            out["response"] = self.response
        out.update(self.extra)
        return out


#: which allow flag a live call of each adapter needs, besides ``dry_run: false``
ALLOW_FLAGS = {
    "stripe": "allow_payments",
    "social": "allow_external_posting",
    "typeform": "allow_typeform_auto_ingest",
}


def decide_mode(adapter: str, policy: Policy, credentials_configured: bool, live_capable: bool = True) -> Mode:
    """The one answer to "may this call go live?", with the reason for it."""
    if policy.dry_run:
        return Mode(False, "policy: dry_run is true")
    flag = ALLOW_FLAGS.get(adapter)
    if flag and not policy.data.get(flag, False):
        return Mode(False, f"policy: {flag} is false")
    if not credentials_configured:
        return Mode(False, f"secrets: {adapter} is not configured (PLACEHOLDER)")
    if not live_capable:
        return Mode(False, f"live mode for {adapter} is not available in this version")
    return Mode(True, "policy allows it and the secrets are configured")


class Adapter:
    """Base of every adapter. Subclasses set the class attributes and implement ``build``."""

    name = "adapter"
    operation = "call"
    simulated_msg = "Simulated call"
    #: whether this adapter can make real calls (the others always simulate, and say why)
    live_capable = False

    def build(self, payload: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        raise NotImplementedError

    def credentials_configured(self, payload: dict[str, Any], secrets: Secrets) -> bool:
        return False

    def call(self, payload: dict[str, Any], ctx: CallContext) -> AdapterResult:
        started = time.perf_counter()
        request = self.build(payload, ctx)
        mode = decide_mode(self.name, ctx.policy, self.credentials_configured(payload, ctx.secrets), self.live_capable)
        if ctx.simulated_latency_ms:
            time.sleep(ctx.simulated_latency_ms / 1000)
        result = AdapterResult(self.name, self.operation, mode, self.simulated_msg, request)
        result.duration_ms = (time.perf_counter() - started) * 1000
        return result


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {REDACTED}"}

"""What every adapter shares: the exact request, one mode decision, simulated or live calls.

An adapter turns a payload into the exact request it would send (``build``), credentials shown as
``[REDACTED]``: the description is safe to store, log and return. Whether a call is live or
simulated is decided by :func:`decide_mode` alone, and the reason travels into the audit record.
Live calls (``send``) raise :class:`LiveCallFailed` with a ``kind`` that says whether the failure
is the adapter's (``unavailable``, ``auth``, ``ambiguous``: these roll the adapter back) or the
request's (``declined``, ``invalid``: these only fail the run).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..errors import AdapterError
from ..policy import Policy
from ..secrets import REDACTED, Secrets

#: which allow flag a live call of each adapter needs, besides dry_run being off
ALLOW_FLAGS = {
    "stripe": "allow_payments",
    "social": "allow_external_posting",
    "typeform": "allow_typeform_auto_ingest",
}
#: failure kinds that say the adapter (not the request) is broken: they trigger auto rollback
ADAPTER_FAULTS = frozenset({"unavailable", "auth", "ambiguous"})


class LiveCallFailed(AdapterError):
    """Raised when a live call fails for good; ``kind`` classifies why."""

    def __init__(self, message: str, kind: str, response: dict[str, Any] | None = None):
        super().__init__(message)
        self.kind = kind
        self.response = response

    @property
    def adapter_fault(self) -> bool:
        return self.kind in ADAPTER_FAULTS


class LiveCallRefused(AdapterError):
    """Raised when a run's live call is refused because the run no longer acts under the lease
    its grant names (nothing was sent)."""

    code = "live_call_refused"


class RetryLater(AdapterError):
    """The provider asked to be called again in ``seconds`` (a ``Retry-After`` within the adapter's
    ceiling): the run goes back to the queue for then instead of a worker sleeping. A 429 says
    the provider did not act, so calling again later is safe; it is no adapter fault."""

    def __init__(self, message: str, seconds: float, response: dict[str, Any] | None = None):
        super().__init__(message)
        self.seconds = seconds
        self.response = response


@dataclass(frozen=True)
class Mode:
    live: bool
    reason: str
    #: the policy's switches (dry_run, the allow flag) say live, and only circumstance (secrets,
    #: a rollback, the canary share, a call outside any run) makes this call simulated: a critical
    #: run must then not pass a simulation off as the real thing (``aurora.outcomes``)
    intended_live: bool = False

    @property
    def name(self) -> str:
        return "live" if self.live else "simulated"


@dataclass(frozen=True)
class CallContext:
    """What an adapter may know about the call besides its payload."""

    run_id: str | None
    policy: Policy
    secrets: Secrets
    simulated_latency_ms: int = 0
    #: AI-engine cool-down state shared by all processes (None outside a run)
    health: Any = None
    #: adapter name -> aurora.adapter_state.Rollout
    rollouts: dict[str, Any] = field(default_factory=dict)
    #: aurora.ratelimit.RateLimiter, or None for no limiting
    limiter: Any = None

    #: what the binding resolved for the live call (``Adapter.binding_facts``: a Stripe customer's
    #: default payment method), so the call sends exactly what the votes approved
    facts: dict[str, Any] = field(default_factory=dict)

    #: what proves that ``run_id`` may act live now (``aurora.leases.ActLease``: the run is in its
    #: act phase under this worker's lease); a context without one is an ad-hoc call's
    grant: Any = None

    #: of a call outside any run: its own id, so no two ad-hoc calls share an idempotency key
    #: (one key for all of them once handed a second customer the first one's PaymentIntent)
    call_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def idempotency_key(self, adapter: str, operation: str) -> str:
        return f"aurora-{self.run_id or 'adhoc-' + self.call_id}-{adapter}-{operation}"

    def settings(self, adapter: str) -> dict[str, Any]:
        return self.policy.adapter(adapter)

    def wait_for_rate(self, adapter: str) -> None:
        if self.limiter is not None:
            self.limiter.acquire(adapter, self.settings(adapter).get("rate_limit"))


def canary_bucket(run_id: str) -> int:
    """0..99, the same for a run id on every machine and every retry."""
    return int(hashlib.sha256(run_id.encode()).hexdigest()[:8], 16) % 100


#: why a call outside any run (the seed's module-level functions) is simulated, and what to do
ADHOC_REASON = ("outside a run: a direct adapter call is always simulated, with no approval gate to pass; "
                "to act for real, submit a workflow (aurora submit FILE)")


def decide_mode(adapter: str, ctx: CallContext, configured: bool, live_capable: bool = True) -> Mode:
    """The one answer to "may this call go live?", with the reason for it.

    Only a run goes live: it passed its gate (approvals), is audited and has its own
    idempotency key. A call without a run id never does, whatever the policy says, and its
    reason says how to act for real.
    """
    mode = _decide(adapter, ctx, configured, live_capable)
    if ctx.run_id is None and mode.reason != ADHOC_REASON:
        return Mode(False, f"{mode.reason}; {ADHOC_REASON}", mode.intended_live)
    return mode


def policy_keeps_simulated(adapter: str, policy: Policy) -> str | None:
    """Why the policy's own switches keep ``adapter`` simulated, or None: the policy means it live."""
    override = policy.adapter(adapter).get("dry_run")
    if override is True:
        return f"policy: adapters.{adapter}.dry_run is true"
    if override is None and policy.dry_run:
        return "policy: dry_run is true"
    flag = ALLOW_FLAGS.get(adapter)
    if flag and not policy.data.get(flag, False):
        return f"policy: {flag} is false"
    return None


def _decide(adapter: str, ctx: CallContext, configured: bool, live_capable: bool) -> Mode:
    policy = ctx.policy
    override = policy.adapter(adapter).get("dry_run")
    flag = ALLOW_FLAGS.get(adapter)
    kept = policy_keeps_simulated(adapter, policy)
    if kept is not None:
        return Mode(False, kept)
    # From here on the policy means this adapter to act live; what follows is circumstance.
    if ctx.run_id is None:
        return Mode(False, ADHOC_REASON, intended_live=True)
    if not configured:
        return Mode(False, f"secrets: {adapter} is not configured (missing or PLACEHOLDER)", intended_live=True)
    if not live_capable:
        return Mode(False, f"live mode for {adapter} is not available")
    rollout = ctx.rollouts.get(adapter)
    if rollout is not None and rollout.rolled_back:
        return Mode(False, f"rolled back after a live failure ({rollout.rollback_reason}); "
                           f"re-enable with: aurora adapters enable {adapter}", intended_live=True)
    source = f"adapters.{adapter}.dry_run is false" if override is False else "dry_run is false"
    promoted = rollout is not None and rollout.promoted
    percent = policy.canary_percent
    if not promoted and percent < 100:
        if canary_bucket(ctx.run_id) >= percent:
            return Mode(False, f"canary: this run is outside the {percent}% live share "
                               f"(until: aurora adapters promote {adapter})", intended_live=True)
        return Mode(True, f"canary: this run is inside the {percent}% live share; policy {source}")
    return Mode(True, f"live: policy {source}, {flag or 'no allow flag needed'}, secrets configured, promoted")


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


class Adapter:
    """Base of every adapter. Subclasses set the class attributes and implement ``build``
    (and ``send`` if they can go live)."""

    name = "adapter"
    operation = "call"
    simulated_msg = "Simulated call"
    live_msg = "Done"
    #: whether this adapter can make real calls
    live_capable = False
    #: whether a live call interrupted midway may simply be made again (the provider dedups it)
    repeat_safe = False
    #: whether a live call changes something at the provider (reads do not: their outcome needs
    #: no reconciliation and is not kept for the next attempt)
    has_side_effects = True

    def build(self, payload: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        raise NotImplementedError

    def credentials_configured(self, payload: dict[str, Any], secrets: Secrets) -> bool:
        return False

    def credential(self, payload: dict[str, Any]) -> tuple[str, ...] | None:
        """The secrets path of the credential a live call of this payload authenticates with."""
        return None

    def binding_facts(self, payload: dict[str, Any], ctx: CallContext, mode: Mode) -> dict[str, Any]:
        """What decides who acts, or on what, beyond ``build``'s request: bound into the hash
        votes approve (``aurora.binding``), so a swapped key voids them. Never a secret: the
        credential appears as its fingerprint (``Secrets.fingerprint``)."""
        path = self.credential(payload)
        if path is None:
            return {}
        return {"credential": ctx.secrets.fingerprint(*path) or "not configured"}

    def decide(self, payload: dict[str, Any], ctx: CallContext) -> Mode:
        return decide_mode(self.name, ctx, self.credentials_configured(payload, ctx.secrets), self.live_capable)

    def carry(self, facts: dict[str, Any], ctx: CallContext) -> None:
        """Put what an approved rendering resolved (its ``facts``) into ``ctx.facts`` for the call,
        so an act resumed after a crash, which renders nothing, still sends what was approved."""

    def send(self, payload: dict[str, Any], request: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        raise LiveCallFailed(f"{self.name} cannot make live calls", "invalid")

    def call(self, payload: dict[str, Any], ctx: CallContext, mode: Mode | None = None) -> AdapterResult:
        started = time.perf_counter()
        request = self.build(payload, ctx)
        mode = mode or self.decide(payload, ctx)
        if mode.live and (ctx.run_id is None or ctx.grant is None):
            # Whoever says otherwise: only a run that passed its gate acts, and a run id alone is
            # no proof of that (anybody can name one): without a grant it is an ad-hoc call.
            mode = Mode(False, ADHOC_REASON if ctx.run_id is None else f"run id {ctx.run_id!r} came without proof "
                        f"that it is acting under a worker's lease; {ADHOC_REASON}", intended_live=True)
        if mode.live:
            refused = _confirm(ctx)
            if refused is not None:  # the lease was lost (another worker, a cancel): never act twice
                raise LiveCallRefused(f"live call refused: {refused}")
        if mode.live:
            response = self.send(payload, request, ctx)
            result = AdapterResult(self.name, self.operation, mode, self.live_msg, request, response=response)
        else:
            if ctx.simulated_latency_ms:
                time.sleep(ctx.simulated_latency_ms / 1000)
            result = AdapterResult(self.name, self.operation, mode, self.simulated_msg, request)
        result.duration_ms = (time.perf_counter() - started) * 1000
        return result


def _confirm(ctx: CallContext) -> str | None:
    """The grant's answer (None: act); a database that does not answer is tried a few times, then
    the call is refused: nothing is sent on a lease nobody could confirm."""
    for attempt in range(3):
        try:
            return ctx.grant.refusal(ctx.run_id)
        except Exception as exc:  # noqa: BLE001 - a database blip, or worse: either way, do not send
            if attempt == 2:
                return f"the run's lease could not be confirmed ({exc.__class__.__name__}); nothing was sent"
            time.sleep(0.5 * 2**attempt)
    return None  # pragma: no cover - the loop returns


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {REDACTED}"}

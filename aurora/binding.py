"""What an approver approves: the exact request the adapter will send, and its mode.

The worker renders a waiting run's request with the adapter's own ``build`` (credentials shown as
``[REDACTED]``) and decides its mode with ``adapter.decide`` — the same two calls, with the same
payload and context, that the act then makes — and hashes both together. That rendering is kept
on the run (``runs.approval_binding``) and is what every place that asks for a vote shows; each
vote stores the hash it approved. In the transaction that begins the act the worker renders and
decides again: if the hash differs (the payload, the policy, the secrets' sender domain, a canary
promoted or a rollback changed what would be sent or whether it is live), the votes no longer
count and the run waits for new ones.

Pure: no database, no Flask, no Celery.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .adapters import CallContext, Mode

#: form and JSON fields in plain words, in this order; any other field follows under its own name
LABELS = {
    "from": "From", "to": "To", "h:Reply-To": "Reply-To", "subject": "Subject", "text": "Text", "html": "HTML part",
    "template": "Template", "t:variables": "Template variables",
    "customer": "Customer", "payment_method": "Payment method", "description": "Description",
    "message": "Post text", "caption": "Caption", "link": "Link", "image_url": "Image URL",
    "model": "Model", "max_tokens": "Max tokens",
}
#: fields that are shown better another way (the amount in major units, the text of a message)
_SHOWN_OTHERWISE = {"amount", "currency", "messages"}


def bind(adapter: Any, payload: dict[str, Any], ctx: CallContext, mode: Mode) -> dict[str, Any]:
    """The rendered request and mode of one run, and the hash votes are bound to."""
    try:
        request = ctx.secrets.redact(adapter.build(payload, ctx))
    except Exception as exc:  # noqa: BLE001 - the act fails on it too, as the run's error; approvers see why
        request = {"unrenderable": f"{exc.__class__.__name__}: {str(exc)[:200]}"}
    body: dict[str, Any] = {
        "adapter": adapter.name,
        "operation": adapter.operation,
        "request": request,
        "mode": mode.name,
        "reason": mode.reason,
    }
    if payload.get("candidates"):
        # an analysis falls back along these engines: they decide where the text may go
        body["engines"] = list(payload["candidates"])
    # who the call acts as (the credential's fingerprint, never the secret) and what it resolved
    # beyond the request (a Stripe customer's default payment method): a key swap or a changed
    # target is a changed request
    try:
        facts = adapter.binding_facts(payload, ctx, mode)
    except Exception as exc:  # noqa: BLE001 - shown as the reason no vote for it can act
        facts = {"unresolved": f"{exc.__class__.__name__}: {str(exc)[:200]}"}
    if facts:
        body["facts"] = ctx.secrets.redact(facts)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return {**body, "hash": hashlib.sha256(canonical.encode("utf-8")).hexdigest()}


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _fields(part: dict[str, Any]) -> list[tuple[str, str]]:
    fields = {**(part.get("form") or {}), **(part.get("json") or {}), **(part.get("params") or {})}
    rows = [(LABELS[k], _text(fields[k])) for k in LABELS if k in fields]
    for message in fields.get("messages") or []:
        rows.append(("Text", _text(message.get("content"))))
    rows += [(k, _text(v)) for k, v in fields.items() if k not in LABELS and k not in _SHOWN_OTHERWISE]
    return rows


def plain(goal: str, payload: dict[str, Any], binding: dict[str, Any]) -> list[tuple[str, str]]:
    """The request in plain words, every field that changes what is sent or to whom."""
    rows: list[tuple[str, str]] = []
    if goal == "charge":
        rows.append(("Amount", f"{payload['amount']} {str(payload['currency']).upper()}"))
    request = binding["request"]
    parts = request.get("steps") or [request]
    for number, part in enumerate(parts, 1):
        where = f"{part.get('method', '')} {part.get('url', '')}".strip()
        rows.append(("Sends" if len(parts) == 1 else f"Step {number}", where))
        rows += _fields(part)
    if binding.get("engines"):
        rows.append(("Engines, in order", ", ".join(binding["engines"])))
    facts = binding.get("facts") or {}
    if "payment_method" in facts:
        rows.append(("Payment method (the customer's default, as looked up)", _text(facts["payment_method"])))
    if "credential" in facts:
        rows.append(("Credential (fingerprint)", _text(facts["credential"])))
    rows += [(k, _text(v)) for k, v in facts.items() if k not in ("payment_method", "credential")]
    return rows


def view(goal: str, payload: dict[str, Any], binding: dict[str, Any] | None) -> dict[str, Any] | None:
    """What an approver is shown: plain words first, the full request behind them, the mode."""
    if binding is None:
        return None
    return {
        "plain": [{"label": label, "value": value} for label, value in plain(goal, payload, binding)],
        "mode": binding["mode"],
        "live": binding["mode"] == "live",
        "reason": binding["reason"],
        "adapter": binding["adapter"],
        "operation": binding["operation"],
        "request": binding["request"],
        "facts": binding.get("facts") or {},
        "hash": binding["hash"],
    }

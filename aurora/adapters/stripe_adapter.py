"""Stripe: charge a customer with a PaymentIntent confirmed off-session."""

from __future__ import annotations

from typing import Any

from ..money import to_minor_units
from ..secrets import REDACTED, Secrets
from .base import Adapter, CallContext
from .context import default_context

API_BASE = "https://api.stripe.com"


class StripeAdapter(Adapter):
    name = "stripe"
    operation = "charge"
    simulated_msg = "Simulated charge"

    def build(self, payload: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        currency = str(payload["currency"])
        form: dict[str, Any] = {
            "amount": to_minor_units(payload["amount"], currency),
            "currency": currency.lower(),
            "customer": payload["customer"],
            "confirm": "true",
            "off_session": "true",
        }
        if payload.get("payment_method"):
            form["payment_method"] = payload["payment_method"]
        if payload.get("description"):
            form["description"] = payload["description"]
        if ctx.run_id:
            form["metadata[aurora_run_id]"] = ctx.run_id
        return {
            "method": "POST",
            "url": f"{API_BASE}/v1/payment_intents",
            "headers": {
                "Authorization": f"Bearer {REDACTED}",
                "Idempotency-Key": ctx.idempotency_key(self.name, self.operation),
                "Content-Type": "application/x-www-form-urlencoded",
            },
            "form": form,
        }

    def credentials_configured(self, payload: dict[str, Any], secrets: Secrets) -> bool:
        return secrets.configured("stripe", "secret_key")


def charge_customer(customer: str, amount: str | int, currency: str, description: str | None = None) -> dict[str, Any]:
    """The seed's call: ``charge_customer("cus_123", "150.00", "EUR")`` (simulated unless live)."""
    payload: dict[str, Any] = {"customer": customer, "amount": amount, "currency": currency}
    if description:
        payload["description"] = description
    return StripeAdapter().call(payload, default_context()).as_dict()


if __name__ == "__main__":  # pragma: no cover - the seed's "test each adapter alone"
    import json

    print(json.dumps(charge_customer("cus_123", "150.00", "EUR"), indent=2))

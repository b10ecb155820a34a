"""Stripe: charge a customer with a PaymentIntent confirmed off-session, through the official SDK.

Amounts are decimal strings converted to minor units by the currency's exponent. The idempotency
key is derived from the run id, so every retry — the SDK's own (it honours ``Stripe-Should-Retry``
and retries 409, 5xx and connection errors with backoff) or a whole worker's after a crash —
reaches Stripe as the same request, and Stripe charges once. A card decline is never retried.
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run as a file: python3 aurora/adapters/stripe_adapter.py
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[2])  # the repository, not this folder (http.py)
    from aurora.adapters.script import rerun

    rerun("aurora.adapters.stripe_adapter")

from typing import Any

from ..money import to_minor_units
from ..secrets import REDACTED, Secrets
from . import adhoc
from .base import Adapter, CallContext, LiveCallFailed, Mode

API_BASE = "https://api.stripe.com"
#: where ``binding_facts`` leaves the payment method it resolved, for ``send`` (``CallContext.facts``)
RESOLVED_PM = "stripe.payment_method"


def _client(secret_key: str, settings: dict[str, Any], timeout: float | None = None,
            retries: int | None = None) -> Any:
    import stripe

    return stripe.StripeClient(
        secret_key,
        base_addresses={"api": settings.get("base_url", API_BASE)},
        max_network_retries=int(settings.get("retries", 2)) if retries is None else retries,
        http_client=stripe.RequestsClient(timeout=float(settings.get("timeout_seconds", 30)) if timeout is None
                                          else timeout),
    )


class IntentUnknown(LookupError):
    """Stripe has no PaymentIntent of that id on this account."""


class IntentUnavailable(RuntimeError):
    """Stripe could not be asked (no answer, an error, or a key it refused): ask again later."""


#: a webhook is answered within Stripe's delivery timeout, so its look-up waits less than a charge
LOOKUP_TIMEOUT = 10.0


def retrieve_intent(intent_id: str, secret_key: str, settings: dict[str, Any]) -> dict[str, Any]:
    """``GET /v1/payment_intents/{id}``: the PaymentIntent as Stripe holds it now.

    Stripe's guidance for webhooks: an event is a notice that something changed, delivered at
    least once and in no particular order; the object's state is what Stripe answers when asked.
    Raises :class:`IntentUnknown` (Stripe says there is none) or :class:`IntentUnavailable`."""
    import stripe

    if not secret_key:
        raise IntentUnavailable("stripe.secret_key is not configured, so Stripe cannot be asked")
    timeout = min(float(settings.get("timeout_seconds", 30)), LOOKUP_TIMEOUT)
    client = _client(secret_key, settings, timeout=timeout, retries=min(int(settings.get("retries", 2)), 1))
    try:
        return client.v1.payment_intents.retrieve(intent_id).to_dict()
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            raise IntentUnknown(f"Stripe has no PaymentIntent {intent_id}") from None
        raise IntentUnavailable(f"Stripe refused the look-up ({exc.code or exc.http_status})") from None
    except (stripe.AuthenticationError, stripe.PermissionError) as exc:
        raise IntentUnavailable(f"Stripe refused the key (HTTP {exc.http_status})") from None
    except stripe.StripeError as exc:
        raise IntentUnavailable(f"Stripe did not answer the look-up ({exc.__class__.__name__})") from None


class StripeAdapter(Adapter):
    name = "stripe"
    operation = "charge"
    simulated_msg = "Simulated charge"
    live_msg = "Charged"
    live_capable = True
    repeat_safe = True  # the idempotency key makes a repeated call the same call

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
        base = ctx.settings(self.name).get("base_url", API_BASE).rstrip("/")
        return {
            "method": "POST",
            "url": f"{base}/v1/payment_intents",
            "headers": {
                "Authorization": f"Bearer {REDACTED}",
                "Idempotency-Key": ctx.idempotency_key(self.name, self.operation),
                "Content-Type": "application/x-www-form-urlencoded",
            },
            "form": form,
        }

    def credentials_configured(self, payload: dict[str, Any], secrets: Secrets) -> bool:
        return secrets.configured("stripe", "secret_key")

    def credential(self, payload: dict[str, Any]) -> tuple[str, ...]:
        return ("stripe", "secret_key")

    def binding_facts(self, payload: dict[str, Any], ctx: CallContext, mode: Mode) -> dict[str, Any]:
        """The key's fingerprint, and for a live charge without a ``payment_method`` the one it
        would use: the customer's default, looked up now (a read). ``send`` then charges exactly
        that one; a changed default is a changed request, and voids earlier votes."""
        facts = super().binding_facts(payload, ctx, mode)
        if mode.live and not payload.get("payment_method"):
            try:
                facts["payment_method"] = ctx.facts[RESOLVED_PM] = self._default_method(
                    self._client(ctx), str(payload["customer"]), ctx)
            except LiveCallFailed as exc:  # approvers see why; a charge approved like this charges nobody
                ctx.facts[RESOLVED_PM] = None
                facts["payment_method"] = f"unresolved: {exc}"
        return facts

    def carry(self, facts: dict[str, Any], ctx: CallContext) -> None:
        if "payment_method" in facts:
            method = facts["payment_method"]
            ctx.facts[RESOLVED_PM] = None if str(method).startswith("unresolved") else method

    def _client(self, ctx: CallContext) -> Any:
        settings = ctx.settings(self.name)
        return _client(ctx.secrets.get("stripe", "secret_key") or "", settings)

    def _default_method(self, client: Any, customer: str, ctx: CallContext) -> str:
        import stripe

        ctx.wait_for_rate(self.name)
        try:
            body = client.v1.customers.retrieve(customer).to_dict()
        except (stripe.AuthenticationError, stripe.PermissionError) as exc:
            raise LiveCallFailed(f"Stripe refused the key (HTTP {exc.http_status})", "auth") from None
        except stripe.InvalidRequestError as exc:
            raise LiveCallFailed(f"Stripe refused the request ({exc.code or exc.http_status})", "invalid") from None
        except stripe.StripeError as exc:
            raise LiveCallFailed(f"Stripe unavailable ({exc.__class__.__name__})", "unavailable") from None
        default = (body.get("invoice_settings") or {}).get("default_payment_method")
        if not default:
            raise LiveCallFailed(f"customer {customer} has no default payment method", "invalid")
        return default if isinstance(default, str) else default["id"]

    def send(self, payload: dict[str, Any], request: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        import stripe

        client = self._client(ctx)
        form = request["form"]
        params: dict[str, Any] = {
            "amount": form["amount"], "currency": form["currency"], "customer": form["customer"],
            "confirm": True, "off_session": True,
        }
        for key in ("description", "payment_method"):
            if key in form:
                params[key] = form[key]
        if ctx.run_id:
            params["metadata"] = {"aurora_run_id": ctx.run_id}
        if "payment_method" not in params and RESOLVED_PM in ctx.facts:
            if ctx.facts[RESOLVED_PM] is None:
                raise LiveCallFailed(f"the payment method of customer {form['customer']} could not be looked up when "
                                     "the charge was approved; nothing was charged", "invalid")
            params["payment_method"] = ctx.facts[RESOLVED_PM]  # the one the votes approved
        try:
            if "payment_method" not in params:
                params["payment_method"] = self._default_method(client, form["customer"], ctx)
            ctx.wait_for_rate(self.name)
            intent = client.v1.payment_intents.create(
                params=params, options={"idempotency_key": request["headers"]["Idempotency-Key"]})
        except stripe.CardError as exc:
            error = exc.error
            raise LiveCallFailed(f"card declined ({exc.code})", "declined", {
                "code": exc.code, "decline_code": getattr(error, "decline_code", None),
                "payment_intent": getattr(getattr(error, "payment_intent", None), "id", None),
            }) from None
        except (stripe.AuthenticationError, stripe.PermissionError) as exc:
            raise LiveCallFailed(f"Stripe refused the key (HTTP {exc.http_status})", "auth") from None
        except (stripe.InvalidRequestError, stripe.IdempotencyError) as exc:
            raise LiveCallFailed(f"Stripe refused the request ({exc.code or exc.http_status})", "invalid",
                                 {"code": exc.code, "param": getattr(exc, "param", None)}) from None
        except stripe.APIConnectionError as exc:
            # No answer after the SDK's retries: one of them may have reached Stripe and charged.
            raise LiveCallFailed(f"Stripe did not answer ({exc.__class__.__name__}); the charge may have been made",
                                 "ambiguous") from None
        except stripe.StripeError as exc:
            raise LiveCallFailed(f"Stripe unavailable ({exc.__class__.__name__})", "unavailable") from None
        body = intent.to_dict()
        return {key: body.get(key) for key in ("id", "status", "amount", "currency", "latest_charge")}


    def persist(self, db: Any, session: Any, node: str, run_id: str, result: Any) -> None:
        """Remember the PaymentIntent's id (webhooks find the run by it) and what the money did so far."""
        from sqlalchemy import or_

        from ..models import ExternalRef, Run

        response = result.response or {}
        if not result.mode.live or not response.get("id"):
            return
        session.merge(ExternalRef(provider="stripe", ref=response["id"], run_id=run_id))
        settlement = "succeeded" if response.get("status") == "succeeded" else "pending"
        # A webhook may have settled it already (while a crashed attempt was retried): keep that.
        session.query(Run).filter(Run.id == run_id, or_(Run.settlement.is_(None), Run.settlement == "pending")).update(
            {"settlement": settlement}, synchronize_session=False)


def charge_customer(customer: str, amount: str | int, currency: str, description: str | None = None) -> dict[str, Any]:
    """The seed's call: ``charge_customer("cus_123", "150.00", "EUR")`` (simulated unless live)."""
    payload: dict[str, Any] = {"customer": customer, "amount": amount, "currency": currency}
    if description:
        payload["description"] = description
    return adhoc.call(StripeAdapter(), payload)


if __name__ == "__main__":  # pragma: no cover - the seed's "test each adapter alone"
    from .selftest import main

    main("stripe")

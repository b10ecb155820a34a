"""``POST /webhooks/stripe``, ``/webhooks/typeform``, ``/webhooks/mailgun``: signed by the
provider, not by an API key."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from .. import stripe_settlement, webhooks
from ..stripe_settlement import WebhookDeferred
from ..webhooks import WebhookRejected

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")


def _runtime() -> Any:
    return current_app.extensions["aurora"]


def _refuse(provider: str, exc: WebhookRejected, size: int) -> tuple[Response, int]:
    headers = {k: request.headers.get(k, "")[:120] for k in ("User-Agent", "Content-Type") if k in request.headers}
    webhooks.record_rejection(_runtime().db, provider, str(exc), headers, size)
    return jsonify({"error": "webhook_rejected", "message": str(exc)}), exc.http_status


def _handle(provider: str, secret_path: tuple[str, ...], process: Callable[[bytes, str], dict[str, Any]]) -> Any:
    body = request.get_data(cache=False)
    secret = _runtime().secrets().get(*secret_path)
    if not secret:
        return jsonify({"error": "not_configured",
                        "message": f"{'.'.join(secret_path)} is not configured in the secrets file"}), 403
    try:
        return jsonify(process(body, secret)), 200
    except WebhookDeferred as exc:  # genuine, but not applicable now: the provider delivers it again
        return jsonify({"error": exc.code, "message": str(exc)}), 503, {"Retry-After": "60"}
    except WebhookRejected as exc:
        return _refuse(provider, exc, len(body))


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookRejected("the body is not JSON") from None
    if not isinstance(value, dict):
        raise WebhookRejected("the body is not a JSON object")
    return value


@bp.post("/stripe")
def stripe() -> Any:
    def process(body: bytes, secret: str) -> dict[str, Any]:
        webhooks.verify_stripe(body, request.headers.get("Stripe-Signature"), secret)
        return stripe_settlement.apply_stripe(_runtime().engine, _json(body))

    return _handle("stripe", ("stripe", "webhook_secret"), process)


@bp.post("/typeform")
def typeform() -> Any:
    # Typeform disables a webhook that answers 404 or 410: this endpoint never does.
    def process(body: bytes, secret: str) -> dict[str, Any]:
        webhooks.verify_typeform(body, request.headers.get("Typeform-Signature"), secret)
        return webhooks.apply_typeform(_runtime().engine, _json(body))

    return _handle("typeform", ("typeform", "webhook_secret"), process)


@bp.post("/mailgun")
def mailgun() -> Any:
    def process(body: bytes, key: str) -> dict[str, Any]:
        payload = _json(body)
        token = webhooks.verify_mailgun(payload.get("signature") or {}, key)
        return webhooks.apply_mailgun(_runtime().engine, payload, token)

    return _handle("mailgun", ("mailgun", "webhook_signing_key"), process)

"""Adapters: the only way anything reaches an external service. One module per service."""

from __future__ import annotations

from . import engines, mailgun_adapter, social_adapter, stripe_adapter, typeform_adapter
from .base import Adapter, AdapterResult, CallContext, Mode, decide_mode

#: the adapter that carries out each workflow goal
BY_GOAL: dict[str, Adapter] = {
    "analyse": engines.EngineAdapter(),
    "send_email": mailgun_adapter.MailgunAdapter(),
    "post_external": social_adapter.SocialAdapter(),
    "charge": stripe_adapter.StripeAdapter(),
    "ingest_forms": typeform_adapter.TypeformAdapter(),
}

__all__ = [
    "BY_GOAL",
    "Adapter",
    "AdapterResult",
    "CallContext",
    "Mode",
    "decide_mode",
    "mailgun_adapter",
    "social_adapter",
    "stripe_adapter",
    "typeform_adapter",
]

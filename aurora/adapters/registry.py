"""Which adapter carries out each goal, and every adapter by name."""

from __future__ import annotations

from . import engines, mailgun_adapter, social_adapter, stripe_adapter, typeform_adapter
from .base import Adapter

#: the adapter that carries out each workflow goal
BY_GOAL: dict[str, Adapter] = {
    "analyse": engines.EngineAdapter(),
    "send_email": mailgun_adapter.MailgunAdapter(),
    "post_external": social_adapter.SocialAdapter(),
    "charge": stripe_adapter.StripeAdapter(),
    "ingest_forms": typeform_adapter.TypeformAdapter(),
}
#: every adapter by its name
BY_NAME: dict[str, Adapter] = {adapter.name: adapter for adapter in BY_GOAL.values()}

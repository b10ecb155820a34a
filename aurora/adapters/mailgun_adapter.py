"""Mailgun: send one message through ``POST /v3/{domain}/messages``."""

from __future__ import annotations

import json
from typing import Any

from ..secrets import REDACTED, Secrets
from .base import Adapter, CallContext
from .context import default_context

API_BASE = "https://api.mailgun.net"
DEFAULT_DOMAIN = "mg.example.com"
DEFAULT_FROM = "noreply@example.com"


class MailgunAdapter(Adapter):
    name = "mailgun"
    operation = "send"
    simulated_msg = "Simulated mail send"

    def build(self, payload: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        domain = ctx.secrets.get("mailgun", "domain") or DEFAULT_DOMAIN
        to = payload["to"]
        form: dict[str, Any] = {
            "from": ctx.secrets.get("mailgun", "from") or DEFAULT_FROM,
            "to": to if isinstance(to, list) else [to],
            "subject": payload["subject"],
        }
        for field in ("text", "html", "template"):
            if payload.get(field):
                form[field] = payload[field]
        if payload.get("variables"):
            form["t:variables"] = json.dumps(payload["variables"], ensure_ascii=False, sort_keys=True)
        if ctx.run_id:
            form["v:aurora_run_id"] = ctx.run_id
        return {
            "method": "POST",
            "url": f"{API_BASE}/v3/{domain}/messages",
            "auth": {"type": "basic", "username": "api", "password": REDACTED},
            "form": form,
        }

    def credentials_configured(self, payload: dict[str, Any], secrets: Secrets) -> bool:
        return secrets.configured("mailgun", "api_key") and secrets.configured("mailgun", "domain")


def send_mail(to: str, subject: str, body: str) -> dict[str, Any]:
    """The seed's call: ``send_mail("user@example.com", "Subject", "Body")``."""
    return MailgunAdapter().call({"to": to, "subject": subject, "text": body}, default_context()).as_dict()


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(send_mail("user@example.com", "Subject", "Body"), indent=2))

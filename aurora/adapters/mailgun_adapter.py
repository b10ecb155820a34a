"""Mailgun: send one message with ``POST /v3/{domain}/messages`` (basic auth ``api:KEY``).

Mailgun has no idempotency key, so a send is never repeated blindly: the engine records the
attempt before sending, a read timeout after the request left is *ambiguous* (the mail may be on
its way) and marks the run for reconciliation instead of sending again.
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run as a file: python3 aurora/adapters/mailgun_adapter.py
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[2])  # the repository, not this folder (http.py)
    from aurora.adapters.script import rerun

    rerun("aurora.adapters.mailgun_adapter")

import json
from typing import Any

from ..secrets import REDACTED, Secrets
from . import adhoc, http
from .base import Adapter, CallContext, LiveCallFailed

BASE_URLS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}
DEFAULT_DOMAIN = "mg.example.com"
DEFAULT_FROM = "noreply@example.com"


#: the form fields Mailgun turns into mail headers, and where each comes from
HEADER_FIELDS = {"from": "payload.from", "to": "payload.to", "subject": "payload.subject",
                 "h:Reply-To": "payload.reply_to"}


def _one_line_headers(payload: dict[str, Any], form: dict[str, Any]) -> None:
    """Refuse a header value with a CR or LF: it would start a header of its own (a ``Bcc:``).

    The workflow schema refuses them at submission; this is the last look before the provider,
    for values that did not come through a document (the secrets file's ``from``, a direct call)."""
    for field, path in HEADER_FIELDS.items():
        values = form.get(field)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str) and ("\r" in value or "\n" in value):
                where = path if field != "from" or payload.get("from") else "secrets mailgun.from"
                raise LiveCallFailed(f"{where} has a line break (CR or LF): a mail header is one line", "invalid")


class MailgunAdapter(Adapter):
    name = "mailgun"
    operation = "send"
    simulated_msg = "Simulated mail send"
    live_msg = "Mail queued"
    live_capable = True
    repeat_safe = False

    def base_url(self, ctx: CallContext) -> str:
        settings = ctx.settings(self.name)
        return settings.get("base_url") or BASE_URLS[settings.get("region", "us")]

    def build(self, payload: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        domain = ctx.secrets.get("mailgun", "domain") or DEFAULT_DOMAIN
        to = payload["to"]
        form: dict[str, Any] = {
            # the document's sender, else the account's (secrets file), else a placeholder
            "from": payload.get("from") or ctx.secrets.get("mailgun", "from") or DEFAULT_FROM,
            "to": to if isinstance(to, list) else [to],
            "subject": payload["subject"],
        }
        if payload.get("reply_to"):
            form["h:Reply-To"] = payload["reply_to"]
        _one_line_headers(payload, form)
        for field in ("text", "html", "template"):
            if payload.get(field):
                form[field] = payload[field]
        if payload.get("variables"):
            form["t:variables"] = json.dumps(payload["variables"], ensure_ascii=False, sort_keys=True)
        if ctx.run_id:
            form["v:aurora_run_id"] = ctx.run_id
        return {
            "method": "POST",
            "url": f"{self.base_url(ctx).rstrip('/')}/v3/{domain}/messages",
            "auth": {"type": "basic", "username": "api", "password": REDACTED},
            "form": form,
        }

    def credentials_configured(self, payload: dict[str, Any], secrets: Secrets) -> bool:
        return secrets.configured("mailgun", "api_key") and secrets.configured("mailgun", "domain")

    def credential(self, payload: dict[str, Any]) -> tuple[str, ...]:
        return ("mailgun", "api_key")

    def send(self, payload: dict[str, Any], request: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        fields: list[tuple[str, str]] = []
        for key, value in request["form"].items():
            for item in value if isinstance(value, list) else [value]:
                fields.append((key, str(item)))
        body = http.call(self.name, ctx, "POST", request["url"], data=fields,
                         auth=("api", ctx.secrets.get("mailgun", "api_key") or ""))
        return {"id": body.get("id"), "message": body.get("message")}


    def persist(self, db: Any, session: Any, node: str, run_id: str, result: Any) -> None:
        """Remember the message id, so delivery events find their run."""
        from ..models import ExternalRef

        message_id = (result.response or {}).get("id")
        if result.mode.live and message_id:
            session.merge(ExternalRef(provider="mailgun", ref=message_id.strip("<>"), run_id=run_id))


def send_mail(to: str, subject: str, body: str) -> dict[str, Any]:
    """The seed's call: ``send_mail("user@example.com", "Subject", "Body")``."""
    return adhoc.call(MailgunAdapter(), {"to": to, "subject": subject, "text": body})


if __name__ == "__main__":  # pragma: no cover
    from .selftest import main

    main("mailgun")

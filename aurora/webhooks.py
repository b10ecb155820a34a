"""Provider callbacks: proven authentic, counted once, applied to the right run.

Each provider's own signature scheme is checked on the raw body before anything is parsed
(Mailgun signs fields inside the body, so its body is parsed first, then nothing else happens
until the signature holds). A callback is stored once by its id; a provider retrying the same
one changes nothing twice. A refused callback is a 4xx with a short reason, counted in
``aurora_webhooks_rejected_total``, and sampled into the audit log without its body (the first
per provider and reason each minute, with the number refused since the last record).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import threading
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from . import audit, events, metrics
from .errors import AuroraError
from .models import ExternalRef, WebhookReceipt, utcnow

log = logging.getLogger(__name__)

#: how far a signed timestamp may be from now (seconds), as Stripe's and Mailgun's libraries use
TOLERANCE = 300


class WebhookRejected(AuroraError):
    """Raised when a callback's signature, timestamp or shape is not acceptable."""

    code = "webhook_rejected"
    http_status = 400

    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.http_status = status


def _hmac(key: str, message: bytes) -> bytes:
    return hmac.new(key.encode("utf-8"), message, hashlib.sha256).digest()


def verify_stripe(body: bytes, header: str | None, secret: str, now: float | None = None) -> None:
    """``Stripe-Signature: t=…,v1=…[,v1=…]``: HMAC-SHA256 of ``t.`` + body with the ``whsec_`` secret."""
    if not header:
        raise WebhookRejected("missing Stripe-Signature header", 401)
    pairs = [part.split("=", 1) for part in header.split(",") if "=" in part]
    stamps = [v for k, v in pairs if k.strip() == "t"]
    signatures = [v for k, v in pairs if k.strip() == "v1"]
    if not stamps or not signatures:
        raise WebhookRejected("Stripe-Signature has no timestamp or no v1 signature", 401)
    expected = _hmac(secret, stamps[0].encode() + b"." + body).hex()
    # bytes: compare_digest raises TypeError (a 500) on a str with non-ASCII characters
    if not any(hmac.compare_digest(expected.encode(), candidate.strip().encode("utf-8", "replace"))
               for candidate in signatures):
        raise WebhookRejected("Stripe signature does not match the body", 401)
    try:
        stamp = int(stamps[0])
    except ValueError:
        raise WebhookRejected("Stripe-Signature timestamp is not a number", 401) from None
    if abs((now or time.time()) - stamp) > TOLERANCE:
        raise WebhookRejected("Stripe-Signature timestamp is outside the 300 s tolerance", 401)


def verify_typeform(body: bytes, header: str | None, secret: str) -> None:
    """``Typeform-Signature: sha256=`` + base64 HMAC-SHA256 of the body."""
    if not header or not header.startswith("sha256="):
        raise WebhookRejected("missing Typeform-Signature header", 401)
    expected = "sha256=" + base64.b64encode(_hmac(secret, body)).decode()
    if not hmac.compare_digest(expected.encode(), header.strip().encode("utf-8", "replace")):
        raise WebhookRejected("Typeform signature does not match the body", 401)


def verify_mailgun(signature: dict[str, Any], key: str, now: float | None = None) -> str:
    """HMAC-SHA256 of timestamp + token with the webhook signing key; returns the token."""
    try:
        stamp, token, given = str(signature["timestamp"]), str(signature["token"]), str(signature["signature"])
    except (KeyError, TypeError):
        raise WebhookRejected("Mailgun body has no signature object", 401) from None
    expected = _hmac(key, (stamp + token).encode()).hex()
    if not hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace")):  # bytes: see verify_stripe
        raise WebhookRejected("Mailgun signature does not match", 401)
    try:
        when = float(stamp)
    except ValueError:
        raise WebhookRejected("Mailgun timestamp is not a number", 401) from None
    # "nan" and "inf" are floats too, and every comparison with nan is false: it skipped the check
    if not math.isfinite(when):
        raise WebhookRejected("Mailgun timestamp is not a number", 401)
    if abs((now or time.time()) - when) > TOLERANCE:
        raise WebhookRejected("Mailgun timestamp is outside the 300 s tolerance", 401)
    return token


class RejectionSampler:
    """Decides which refused callbacks get an audit record: the first of each provider and reason
    in a window, carrying how many were refused since the last record.

    A forger can send thousands of callbacks a second, and one chained record each would be a
    writer turn each and gigabytes a day. Every refusal is counted in the metric; the audit log gets
    a bounded sample. The windows are per process (a record per window per web process at most):
    sharing them would cost the database write this avoids.
    """

    def __init__(self, interval: float = 60.0, clock: Any = time.monotonic):
        self.interval, self.clock = interval, clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str, str], tuple[float, int]] = {}

    def admit(self, scope: str, provider: str, reason: str) -> int | None:
        """None to skip the record, else how many refusals it stands for (itself included)."""
        now, key = self.clock(), (scope, provider, reason)
        with self._lock:
            started, refused = self._windows.get(key, (None, 0))
            if started is None or now - started >= self.interval:
                self._windows[key] = (now, 0)
                return refused + 1
            self._windows[key] = (started, refused + 1)
            return None


#: one process's sampler for refused callbacks
SAMPLER = RejectionSampler()


def record_rejection(db: Any, provider: str, reason: str, headers: dict[str, str], size: int) -> None:
    """Count a refused callback, and audit a sample of them: the reason and harmless facts, never
    the body or its signature."""
    metrics.webhook_rejected(provider, reason)
    refused = SAMPLER.admit(db.url, provider, reason)
    if refused is None:
        return
    with db.write() as session:
        audit.append(db, session, run_id=None, adapter=provider, operation="webhook", mode="inbound",
                     reason=reason[:255], request={"headers": headers, "bytes": size, "refused": refused},
                     outcome="rejected", response=None, duration_ms=0.0)


def _mapping(value: Any) -> dict[str, Any]:
    """A part of a signed body that should be an object: anything else counts as empty (a signed
    body may still be odd; it must never be a 500)."""
    return value if isinstance(value, dict) else {}


def _first_time(session: Any, provider: str, external_id: str, type_: str, run_id: str | None) -> bool:
    """Claim this callback id; False if it was taken before (the provider retried)."""
    try:
        with session.begin_nested():
            session.add(WebhookReceipt(provider=provider, external_id=external_id[:255], type=type_[:64],
                                       run_id=run_id, received_at=utcnow()))
        return True
    except IntegrityError:
        return False


def _run_for(session: Any, provider: str, ref: str | None) -> str | None:
    if not ref:
        return None
    return session.scalar(select(ExternalRef.run_id).where(ExternalRef.provider == provider, ExternalRef.ref == ref))


def apply_typeform(engine: Any, body: dict[str, Any]) -> dict[str, Any]:
    from .adapters.typeform_adapter import held_responses, response_event_id

    response = _mapping(body.get("form_response"))
    token, form_id = response.get("token"), response.get("form_id")
    if not isinstance(token, str) or not isinstance(form_id, str) or not token or not form_id:
        raise WebhookRejected("not a Typeform form_response")
    given = response.get("answers")
    answers = {_answer_key(a): _answer_value(a) for a in (given if isinstance(given, list) else [])
               if isinstance(a, dict)}
    policy = engine.policies.current()
    started = None
    with engine.db.write() as session:
        if not _first_time(session, "typeform", f"{form_id}:{token}", "form_response", None):
            return {"received": True, "duplicate": True}
        event_id = response_event_id(form_id, token)
        if not held_responses(session, engine.node, [event_id]):  # an ingest may hold it
            events.append(engine.db, session, engine.node, "typeform.response",
                          {"form_id": form_id, "token": token, "submitted_at": response.get("submitted_at"),
                           "answers": response.get("answers", []), "hidden": response.get("hidden", {}),
                           "via": "webhook"}, event_id=event_id)
    mapping = (policy.data.get("typeform_workflows") or {}).get(form_id)
    if mapping and policy.data.get("allow_typeform_auto_ingest"):
        started = _start_mapped(engine, mapping, form_id, token, answers)
    definitions_started = []
    if policy.data.get("allow_typeform_auto_ingest"):
        from .triggers import start_by_form

        definitions_started = start_by_form(engine, form_id, token, answers)
    return {"received": True, "run_id": started,
            **({"definition_runs": definitions_started} if definitions_started else {})}


def _answer_key(answer: dict[str, Any]) -> str:
    field = _mapping(answer.get("field"))
    return str(field.get("ref") or field.get("id") or "answer")


def _answer_value(answer: dict[str, Any]) -> Any:
    kind = answer.get("type")
    value = answer.get(kind) if isinstance(kind, str) and kind else None
    if isinstance(value, dict) and "label" in value:
        return value["label"]
    if isinstance(value, dict) and "labels" in value:
        return value["labels"]
    return value


def _fill(template: Any, answers: dict[str, Any]) -> Any:
    """``{{ref}}`` in the mapped workflow's strings becomes that answer."""
    if isinstance(template, str):
        for key, value in answers.items():
            template = template.replace("{{" + key + "}}", str(value))
        return template
    if isinstance(template, dict):
        return {k: _fill(v, answers) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, answers) for v in template]
    return template


def _start_mapped(engine: Any, mapping: dict[str, Any], form_id: str, token: str, answers: dict[str, Any]) -> str | None:
    from . import documents
    from .errors import DocumentError
    from .queue import enqueue

    document = _fill(json.loads(json.dumps(mapping)), answers)
    if document.get("goal") == "send_email":
        document.setdefault("payload", {}).setdefault("variables", {})["answers"] = answers
    document.setdefault("origin", "typeform")
    try:
        workflow = documents.validate(document)
    except DocumentError as exc:
        with engine.db.write() as session:
            events.append(engine.db, session, engine.node, "webhook.workflow_invalid",
                          {"form_id": form_id, "token": token, "errors": [p.as_dict() for p in exc.problems]})
        return None
    run = engine.submit(workflow, "typeform-webhook")
    enqueue(run.id)
    return run.id


MAILGUN_EVENTS = {"delivered": "mail.delivered", "failed": "mail.failed", "complained": "mail.complained",
                  "opened": "mail.opened", "clicked": "mail.clicked", "unsubscribed": "mail.unsubscribed"}


def apply_mailgun(engine: Any, body: dict[str, Any], replay_token: str) -> dict[str, Any]:
    data = _mapping(body.get("event-data"))
    kind = str(data.get("event", ""))[:64]
    run_id = str(_mapping(data.get("user-variables")).get("aurora_run_id") or "")[:36] or None
    with engine.db.write() as session:
        if not _first_time(session, "mailgun-token", replay_token, kind, run_id):
            raise WebhookRejected("Mailgun token was used before (a replay)", 401)
        event_id = str(data.get("id") or replay_token)
        if not _first_time(session, "mailgun", event_id, kind, run_id):
            return {"received": True, "duplicate": True}
        # Only the run that sent this very mail gets its events: the message id Mailgun answered
        # the live send with is on record (ExternalRef). The run id in ``user-variables`` is
        # anyone's to set (a charge got mail.delivered), so it must agree, never decide.
        headers = _mapping(_mapping(data.get("message")).get("headers"))
        message_id = str(headers.get("message-id") or "").strip().strip("<>")
        sender = _run_for(session, "mailgun", message_id[:255]) if message_id else None
        if kind not in MAILGUN_EVENTS or sender is None or (run_id is not None and run_id != sender):
            events.append(engine.db, session, engine.node, "webhook.unmatched",
                          {"provider": "mailgun", "event": kind, "run_id": run_id, "message_id": message_id or None})
            return {"received": True, "ignored": "unknown event, or no run sent this message"}
        events.append(engine.db, session, engine.node, MAILGUN_EVENTS[kind],
                      {"recipient": data.get("recipient"), "severity": data.get("severity"),
                       "reason": data.get("reason"), "message_id": message_id,
                       "mailgun_event": event_id}, run_id=sender)
    return {"received": True, "run_id": sender, "event": MAILGUN_EVENTS[kind]}

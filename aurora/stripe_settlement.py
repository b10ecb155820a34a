"""Stripe's callbacks settle charge runs: what a PaymentIntent event may change, and how.

A Stripe event is a claim, not a fact: for a live run Aurora asks Stripe for the PaymentIntent
and settles from Stripe's answer (if Stripe cannot be asked, the callback is deferred: a 503, and
Stripe delivers it again). Settlements are serialised (an advisory lock on PostgreSQL, the writer
lock on SQLite), an older event never overwrites a newer one, and a run whose charge may have
happened (``needs_reconciliation``) is reconciled only by an intent that matches its request.
The signature was checked before any of this (``aurora.webhooks``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import or_, select, update

from . import audit, events
from .errors import AuroraError
from .models import AuditRecord, ExternalRef, Run, RunStatus, RunStep, WebhookReceipt, utcnow
from .webhooks import WebhookRejected, _first_time, _mapping, _run_for

log = logging.getLogger(__name__)

SETTLING = {"payment_intent.succeeded": "succeeded", "payment_intent.payment_failed": "failed"}
#: advisory lock key that serialises Stripe settlements on PostgreSQL ("AURSTRIP")
STRIPE_SETTLE_LOCK = 0x4155525354524950
#: what of a PaymentIntent goes into a run's record
INTENT_FIELDS = ("id", "status", "amount", "currency", "customer", "latest_charge")
#: statuses of a charge run that may have sent a PaymentIntent to Stripe (with its act step begun)
CHARGING = (RunStatus.RUNNING.value, RunStatus.NEEDS_RECONCILIATION.value, RunStatus.SUCCEEDED.value)


def _charge_begun(session: Any, run: Run) -> bool:
    """Whether this run can have made a PaymentIntent: a live act step was begun. A queued,
    rejected or simulated run never called Stripe, so no event can be about it."""
    if run.status not in CHARGING:
        return False
    act = session.scalar(select(RunStep).where(RunStep.run_pk == run.pk, RunStep.step == "act"))
    return act is not None and (act.result or {}).get("mode") == "live"


def _run_by_metadata(session: Any, intent: dict[str, Any]) -> str | None:
    """The charge run named in the intent's ``metadata.aurora_run_id`` (Aurora sets it on every
    PaymentIntent): a charge whose worker died before it could record the intent's id.

    Metadata is only a claim: anyone with a Stripe account on this webhook endpoint can put any
    run id on any intent. So the run must have begun a live charge, and the intent must be the
    charge its document asked for (amount, currency, customer); else the event is about no run."""
    metadata = intent.get("metadata")
    run_id = str(metadata.get("aurora_run_id") or "") if isinstance(metadata, dict) else ""
    if not run_id:
        return None
    run = session.scalar(select(Run).where(Run.id == run_id[:36], Run.goal == "charge"))
    if run is None or not _charge_begun(session, run) or not _is_this_charge(run, intent):
        if run is not None:
            log.warning("Stripe event for PaymentIntent %s names run %s, which did not make it: ignored",
                        intent.get("id"), run.id)
        return None
    return run.id


def _is_this_charge(run: Run, intent: dict[str, Any]) -> bool:
    """Whether the intent is the one the run's document asked for (amount, currency, customer)."""
    from .money import to_minor_units

    payload = run.document.get("payload") or {}
    try:
        amount = to_minor_units(payload["amount"], str(payload["currency"]))
    except (KeyError, AuroraError):
        return False
    # Aurora always sends the document's customer, so the intent must name that very customer.
    return (intent.get("amount") == amount and str(intent.get("currency", "")).lower() == str(payload["currency"]).lower()
            and intent.get("customer") == payload.get("customer"))


def _live_records(session: Any, run_id: str) -> list[AuditRecord]:
    return list(session.scalars(select(AuditRecord).where(
        AuditRecord.run_id == run_id, AuditRecord.adapter == "stripe", AuditRecord.operation == "charge",
        AuditRecord.mode == "live").order_by(AuditRecord.pk)))


def _reconcile(engine: Any, session: Any, run: Run, intent: dict[str, Any], event_id: str) -> int | None:
    """A run that ended ``needs_reconciliation`` and Stripe's signed word that the charge
    succeeded: end the run ``succeeded`` with one live ``ok`` audit record. Returns that record's
    pk, or None when there was nothing to reconcile.

    The audit log is append-only, so the ``unknown`` record of the give-up path stays; the ``ok``
    record written here supersedes it (its reason names it). There is never more than one ``ok``
    record per run, and a run has one PaymentIntent (one idempotency key)."""
    if run.status != RunStatus.NEEDS_RECONCILIATION.value or not _is_this_charge(run, intent):
        return None  # a run still in a worker's hands records its own call
    summary = {key: intent.get(key) for key in INTENT_FIELDS}
    reason = f"reconciled from Stripe event {event_id}"
    records = _live_records(session, run.id)
    ok = [r.pk for r in records if r.outcome == "ok"]
    if ok:
        pk = ok[0]
    else:
        superseded = [r.pk for r in records if r.outcome != "ok"]
        if superseded:
            reason += f"; supersedes audit record {', '.join(map(str, superseded))}"
        key = (run.error or {}).get("idempotency_key") or f"aurora-{run.id}-stripe-charge"
        pk = audit.append(engine.db, session, run_id=run.id, adapter="stripe", operation="charge", mode="live",
                          reason=reason[:255], request={"idempotency_key": key, "payment_intent": intent.get("id"),
                                                        "supersedes": superseded},
                          outcome="ok", response=summary, duration_ms=0.0)["pk"]
    body = {"dry_run": False, "msg": "Charged", "adapter": "stripe", "operation": "charge", "mode": "live",
            "reason": reason, "response": summary, "reconciled": True}
    engine.transition(session, run.id, (RunStatus.NEEDS_RECONCILIATION,), RunStatus.SUCCEEDED,
                      {"mode": "live", "audit": pk, "reconciled_by": event_id}, result=body)
    return pk


def _settle(session: Any, run_id: str, outcome: str) -> bool:
    """Set the run's settlement; False if a failure would downgrade a success.

    Stripe does not deliver events in order, and ``payment_failed`` is not final there (the
    intent goes back to ``requires_payment_method`` and may succeed later), while ``succeeded``
    is. So a settlement of ``succeeded`` is never changed by a failure event, whenever it comes.
    The condition is in the UPDATE itself: two events delivered at once cannot interleave."""
    statement = update(Run).where(Run.id == run_id).values(settlement=outcome, updated_at=utcnow())
    if outcome != "succeeded":
        statement = statement.where(or_(Run.settlement.is_(None), Run.settlement != "succeeded"))
    return bool(session.execute(statement).rowcount)


def _created(event: dict[str, Any]) -> int | None:
    """The event's ``created`` (Unix seconds, Stripe's own clock), or None if absent or not an int."""
    created = event.get("created")
    return created if isinstance(created, int) and not isinstance(created, bool) else None


def _newest_applied(session: Any, run_id: str, intent_id: Any, node: str) -> int | None:
    """The ``created`` of the newest event already applied to this run for this intent (by this
    node: a peer's event about the same run id is never this run's)."""
    from .models import Event

    stamps = [data.get("created") for data in session.scalars(select(Event.data).where(
        events.of_run(run_id), Event.origin == node, Event.type == "run.settled"))
        if isinstance(data, dict) and data.get("payment_intent") == intent_id]
    stamps = [stamp for stamp in stamps if isinstance(stamp, int)]
    return max(stamps) if stamps else None


class WebhookDeferred(AuroraError):
    """Raised when a genuine callback cannot be applied now (the provider could not be asked about
    it): answered 503, nothing stored, so the provider delivers it again later."""

    code = "webhook_deferred"
    http_status = 503


def settlement_of(intent: dict[str, Any]) -> str:
    """A run's settlement from a PaymentIntent's ``status`` as Stripe reports it."""
    status = intent.get("status")
    if status == "succeeded":
        return "succeeded"
    if status == "canceled":
        return "canceled"
    if status == "requires_payment_method" and intent.get("last_payment_error"):
        return "failed"
    return "pending"  # processing, requires_action, requires_confirmation, requires_capture


def _received(session: Any, event_id: str) -> bool:
    return session.scalar(select(WebhookReceipt.external_id).where(
        WebhookReceipt.provider == "stripe", WebhookReceipt.external_id == event_id[:255])) is not None


def _ask_stripe(engine: Any, intent_id: str) -> dict[str, Any] | None:
    """The PaymentIntent as Stripe holds it now; None when Stripe has none of that id."""
    from .adapters.stripe_adapter import IntentUnavailable, IntentUnknown, retrieve_intent
    from .errors import PolicyError, SecretsError

    try:
        settings = engine.policies.current().adapter("stripe")
        key = engine.secrets().get("stripe", "secret_key") or ""
    except (PolicyError, SecretsError) as exc:
        raise WebhookDeferred(f"cannot ask Stripe about {intent_id}: {exc.__class__.__name__}") from None
    try:
        return retrieve_intent(intent_id, key, settings)
    except IntentUnknown:
        return None
    except IntentUnavailable as exc:
        log.warning("Stripe event about %s deferred: %s", intent_id, exc)
        raise WebhookDeferred(f"cannot ask Stripe about {intent_id} now ({exc}); deliver it again later") from None


def apply_stripe(engine: Any, event: dict[str, Any]) -> dict[str, Any]:
    """Apply a verified Stripe event. The event says *that* an intent changed; what it changed to is
    asked of Stripe (``GET /v1/payment_intents/{id}``), as Stripe's guidance advises: a late,
    replayed or forged body (a leaked webhook secret signs anything) never decides the money."""
    event_id, type_ = str(event.get("id", "")), str(event.get("type", ""))
    if not event_id.startswith("evt_"):
        raise WebhookRejected("not a Stripe event")
    claimed = _mapping(event.get("data")).get("object") or {}
    if not isinstance(claimed, dict):
        raise WebhookRejected("the event's data.object is not an object")
    intent_id = claimed.get("id") if isinstance(claimed.get("id"), str) else ""
    acted_upon = type_ in SETTLING
    fetched: dict[str, Any] | None = None
    asked, took_ms = False, 0.0
    if acted_upon and intent_id:
        # Ask Stripe only about an intent a run may have made (a recorded reference, or a metadata
        # claim that fits a live charge), and outside any write: the answer may take seconds.
        with engine.db.read() as session:
            if _received(session, event_id):
                return {"received": True, "duplicate": True}
            candidate = _run_for(session, "stripe", intent_id) or _run_by_metadata(session, claimed)
        if candidate:
            started = time.perf_counter()
            fetched, asked = _ask_stripe(engine, intent_id), True
            took_ms = (time.perf_counter() - started) * 1000
    intent = fetched if asked else claimed
    created = _created(event)
    with engine.db.write() as session:
        # Two events of one intent at once on PostgreSQL: the order check and the write are one turn.
        engine.db.lock(session, STRIPE_SETTLE_LOCK)
        # A stored reference was written by the worker that made the intent, or after a metadata
        # match was checked: it is trusted. A metadata match is checked (on Stripe's own object)
        # before anything is written.
        known = _run_for(session, "stripe", intent_id) if intent is not None else None
        run_id = known or (_run_by_metadata(session, intent) if acted_upon and intent is not None else None)
        if acted_upon and run_id is not None and not asked:
            # the worker recorded the intent between the look and this transaction: ask first
            raise WebhookDeferred(f"PaymentIntent {intent_id} was just recorded; deliver the event again")
        if not _first_time(session, "stripe", event_id, type_, run_id):
            return {"received": True, "duplicate": True}
        if not acted_upon:
            return {"received": True, "ignored": f"{type_} is not acted upon"}
        if run_id is None or intent is None:
            # Answered 2xx all the same: Stripe would retry an error for days, and no retry matches.
            events.append(engine.db, session, engine.node, "webhook.unmatched",
                          {"provider": "stripe", "type": type_, "payment_intent": intent_id or None,
                           "stripe_event": event_id, "unknown_to_stripe": asked and intent is None})
            log.info("Stripe event %s (%s) matches no run", event_id, type_)
            return {"received": True, "ignored": "no run made this payment intent"}
        if not known:  # later events of this intent find the run by it
            session.merge(ExternalRef(provider="stripe", ref=intent_id[:255], run_id=run_id))
        outcome = settlement_of(intent)
        summary = {key: intent.get(key) for key in INTENT_FIELDS}
        audit.append(engine.db, session, run_id=run_id, adapter="stripe", operation="retrieve", mode="live",
                     reason=f"state of {intent_id} asked for Stripe event {event_id}"[:255],
                     request={"payment_intent": intent_id, "stripe_event": event_id, "type": type_},
                     outcome="ok", response=summary, duration_ms=took_ms)
        said = claimed.get("status")
        if said != intent.get("status"):
            log.warning("Stripe event %s says %s is %r, Stripe says %r: Stripe's answer applies", event_id,
                        intent_id, said, intent.get("status"))
        error = intent.get("last_payment_error") or {}
        facts = {"payment_intent": intent_id, "stripe_event": event_id, "type": type_,
                 "stripe_status": intent.get("status"), "event_status": said, "created": created,
                 "decline_code": error.get("decline_code"), "code": error.get("code")}
        newest = _newest_applied(session, run_id, intent_id, engine.node)
        if outcome != "succeeded" and created is not None and newest is not None and created < newest:
            # Stripe delivers out of order: an event older than one applied is not the intent's
            # state any more. (A success is final at Stripe, so it is applied whenever it comes.)
            current = session.scalar(select(Run.settlement).where(Run.id == run_id))
            events.append(engine.db, session, engine.node, "run.settlement_kept",
                          {**facts, "settlement": current, "ignored": type_, "newest_applied": newest},
                          run_id=run_id)
            return {"received": True, "run_id": run_id, "settlement": current,
                    "ignored": "older than the newest event applied for this payment intent"}
        if not _settle(session, run_id, outcome):
            events.append(engine.db, session, engine.node, "run.settlement_kept",
                          {**facts, "settlement": "succeeded", "ignored": type_}, run_id=run_id)
            return {"received": True, "run_id": run_id, "settlement": "succeeded",
                    "ignored": "a later state does not undo a succeeded payment"}
        run = session.scalar(select(Run).where(Run.id == run_id))
        # Only a success ends a reconciliation: after a failure the run stays
        # needs_reconciliation (the customer may still pay, or a person decides).
        reconciled = _reconcile(engine, session, run, intent, event_id) if run and outcome == "succeeded" else None
        events.append(engine.db, session, engine.node, "run.settled",
                      {**facts, "settlement": outcome, "audit": reconciled}, run_id=run_id)
    answer = {"received": True, "run_id": run_id, "settlement": outcome, "stripe_status": intent.get("status")}
    if SETTLING[type_] != outcome:
        answer["note"] = f"the event says {type_}, Stripe says {intent.get('status')}: Stripe's state applies"
    return answer

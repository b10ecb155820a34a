"""Stripe's signed events settle only the charge they are about, in any order, by the state Stripe
reports when asked (GET /v1/payment_intents/ID through the SDK, against the fake Stripe), never by
the event's body: a failure never undoes a success, ``payment_failed`` does not end a
reconciliation, a metadata claim is checked against the run before anything is written, and a
reconciled charge has exactly one ok record."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from test_adapters_live import CHARGE, SECRETS, live  # noqa: F401 - the fixture
from test_webhooks import post, stripe_header

from aurora import documents
from aurora.models import AuditRecord, Event, ExternalRef, Run

WHSEC = SECRETS["stripe"]["webhook_secret"]


def send(client, event_id: str, type_: str, intent: dict, created: int | None = None) -> dict:
    event = {"id": event_id, "object": "event", "type": type_, "data": {"object": intent}}
    if created is not None:
        event["created"] = created
    body = json.dumps(event).encode()
    answer = post(client, "/webhooks/stripe", body, **{"Stripe-Signature": stripe_header(body, secret=WHSEC)})
    assert answer.status_code == 200, answer.json  # answered, so that Stripe stops retrying
    return answer.json


def failed(intent: dict, decline: str = "insufficient_funds") -> dict:
    return {**intent, "status": "requires_payment_method",
            "last_payment_error": {"code": "card_declined", "decline_code": decline}}


def stripe_now(live, intent: dict) -> dict:  # noqa: F811
    """Make ``intent`` what the fake Stripe answers for its id from now on."""
    live.servers["stripe"].state.intents[intent["id"]] = intent
    return intent


def events_of(live, run_id: str | None, type_: str) -> list[Event]:  # noqa: F811
    with live.runtime.db.read() as session:
        return list(session.scalars(select(Event).where(Event.run_id == run_id, Event.type == type_)))


def charges(live, run_id: str) -> list[AuditRecord]:  # noqa: F811
    """The audit records of the run's live charge (a rollback of the adapter has its own)."""
    return [r for r in live.audit(run_id) if (r.adapter, r.operation, r.mode) == ("stripe", "charge", "live")]


@pytest.fixture
def unanswered(live):  # noqa: F811
    """Stripe makes the PaymentIntent but answers after the client's 1 s timeout, every try: the
    charge ends ``needs_reconciliation``, its intent known only to Stripe."""
    server = live.servers["stripe"]
    original = server.default

    def stall(request):
        reply = original(request)
        if request.path == "/v1/payment_intents":
            reply.delay = 1.5
        return reply

    server.default = stall
    yield
    server.default = original


def reconciling(live) -> tuple[Run, dict]:  # noqa: F811
    run = live.run("charge", {**CHARGE, "payment_method": "pm_1"})
    assert run.status == "needs_reconciliation", run.error
    [intent] = live.servers["stripe"].state.intents.values()
    assert intent["metadata"] == {"aurora_run_id": run.id}
    with live.runtime.db.read() as session:  # Aurora never learnt the intent's id
        assert session.get(ExternalRef, ("stripe", intent["id"])) is None
    return run, intent


def test_payment_failed_keeps_a_reconciliation_open_and_a_later_success_settles_it(live, unanswered, client) -> None:  # noqa: F811
    run, intent = reconciling(live)
    before = [(r.mode, r.outcome) for r in charges(live, run.id)]
    first = send(client, "evt_fail", "payment_intent.payment_failed", stripe_now(live, failed(intent)))
    assert first["run_id"] == run.id and first["settlement"] == "failed"
    stored = live.get(run.id)
    # not final at Stripe: the intent may still be paid, so the run stays for Stripe or a person
    assert stored.status == "needs_reconciliation" and stored.settlement == "failed"
    assert [(r.mode, r.outcome) for r in charges(live, run.id)] == before
    send(client, "evt_paid", "payment_intent.succeeded", stripe_now(live, {**intent, "status": "succeeded"}))
    stored = live.get(run.id)
    assert stored.status == "succeeded" and stored.settlement == "succeeded", stored.error
    assert stored.result["response"]["id"] == intent["id"] and stored.result["reconciled"] is True
    ok = [r for r in charges(live, run.id) if r.outcome == "ok"]
    assert len(ok) == 1 and ok[0].response["id"] == intent["id"]
    [succeeded] = events_of(live, run.id, "run.succeeded")
    assert succeeded.data["audit"] == ok[0].pk


def test_a_reconciled_charge_ends_with_exactly_one_live_ok_record(live, unanswered, client) -> None:  # noqa: F811
    run, intent = reconciling(live)
    [unknown] = charges(live, run.id)
    assert unknown.mode == "live" and unknown.outcome != "ok"
    answer = send(client, "evt_paid", "payment_intent.succeeded", {**intent, "status": "succeeded"})
    assert answer["run_id"] == run.id
    records = charges(live, run.id)
    assert [r.outcome for r in records] == [unknown.outcome, "ok"]
    assert records[1].request["supersedes"] == [unknown.pk] and str(unknown.pk) in records[1].reason
    [settled] = events_of(live, run.id, "run.settled")
    assert settled.data["audit"] == records[1].pk
    # the same success again (a retry, or a second event of the intent) writes no second ok record
    send(client, "evt_paid_again", "payment_intent.succeeded", {**intent, "status": "succeeded"})
    assert [r.outcome for r in charges(live, run.id)] == [unknown.outcome, "ok"]


def test_an_older_failure_arriving_after_the_success_never_downgrades_it(live, unanswered, client) -> None:  # noqa: F811
    run, intent = reconciling(live)
    send(client, "evt_paid", "payment_intent.succeeded", {**intent, "status": "succeeded"})
    # Stripe still says succeeded (it is final there): the late body's failure is not its state
    late = send(client, "evt_old_fail", "payment_intent.payment_failed", failed(intent))
    assert late["settlement"] == "succeeded" and "Stripe says succeeded" in late["note"]
    stored = live.get(run.id)
    assert stored.status == "succeeded" and stored.settlement == "succeeded"
    # and were Stripe ever to answer a failure after a success, the success still stands
    stripe_now(live, failed(intent))
    kept = send(client, "evt_later_fail", "payment_intent.payment_failed", failed(intent))
    assert kept["settlement"] == "succeeded" and "does not undo" in kept["ignored"]
    assert live.get(run.id).settlement == "succeeded"
    assert len(events_of(live, run.id, "run.settlement_kept")) == 1


def test_events_apply_in_the_order_stripe_made_them(live, unanswered, client) -> None:  # noqa: F811
    """Two declines of one intent delivered newest first: the older one used to be applied last,
    so the run's settlement named the wrong decline. Now it is ignored, and says why."""
    run, intent = reconciling(live)
    newer = stripe_now(live, failed(intent, "expired_card"))
    assert send(client, "evt_new_fail", "payment_intent.payment_failed", newer, created=2_000)["settlement"] == "failed"
    late = send(client, "evt_old_fail", "payment_intent.payment_failed", failed(intent), created=1_000)
    assert late["settlement"] == "failed" and "older than the newest" in late["ignored"]
    [settled] = events_of(live, run.id, "run.settled")
    assert settled.data["decline_code"] == "expired_card" and settled.data["created"] == 2_000
    [kept] = events_of(live, run.id, "run.settlement_kept")
    assert kept.data["newest_applied"] == 2_000 and kept.data["ignored"] == "payment_intent.payment_failed"
    # a success is final at Stripe: applied whenever it comes, and it ends the reconciliation
    paid = stripe_now(live, {**intent, "status": "succeeded"})
    send(client, "evt_paid", "payment_intent.succeeded", paid, created=1_500)
    stored = live.get(run.id)
    assert stored.status == "succeeded" and stored.settlement == "succeeded"
    # a newer failure still never undoes it, and needs_reconciliation rules are unchanged
    stripe_now(live, newer)
    assert "does not undo" in send(client, "evt_later_fail", "payment_intent.payment_failed", newer,
                                   created=3_000)["ignored"]
    assert live.get(run.id).settlement == "succeeded"


def test_a_failure_after_the_success_of_a_recorded_charge_keeps_it_succeeded(live, client) -> None:  # noqa: F811
    run = live.run("charge", {**CHARGE, "customer": "cus_async", "payment_method": "pm_1"})
    assert run.status == "succeeded" and run.settlement == "pending"
    intent = live.servers["stripe"].state.intents[run.result["response"]["id"]]
    assert intent["status"] == "processing"
    early = send(client, "evt_early", "payment_intent.succeeded", {**intent, "status": "succeeded"})
    assert early["settlement"] == "pending" and "Stripe says processing" in early["note"]  # not paid yet
    send(client, "evt_paid", "payment_intent.succeeded", stripe_now(live, {**intent, "status": "succeeded"}))
    assert live.get(run.id).settlement == "succeeded"
    stripe_now(live, failed(intent))
    send(client, "evt_old_fail", "payment_intent.payment_failed", failed(intent))
    assert live.get(run.id).settlement == "succeeded"


def other_intent(run_id: str, **changes) -> dict:
    return {"id": "pi_OTHER", "object": "payment_intent", "amount": 100, "currency": "usd",
            "customer": "cus_someone_else", "status": "succeeded", "metadata": {"aurora_run_id": run_id},
            **changes}


def test_an_intent_that_names_a_run_that_never_charged_changes_nothing(live, client) -> None:  # noqa: F811
    engine = live.runtime.engine
    queued = engine.submit(documents.load(json.dumps({"name": "b", "goal": "charge", "payload": CHARGE}),
                                          fmt="json"), "sam")
    assert live.get(queued.id).status == "queued"
    for event_id, intent in (("evt_other", other_intent(queued.id)),
                             # even the right amount, currency and customer: this run never began a charge
                             ("evt_same", other_intent(queued.id, amount=15000, currency="eur", customer="cus_42"))):
        answer = send(client, event_id, "payment_intent.succeeded", intent)
        assert "no run" in answer["ignored"] and "run_id" not in answer
    stored = live.get(queued.id)
    assert stored.status == "queued" and stored.settlement is None
    with live.runtime.db.read() as session:
        assert session.get(ExternalRef, ("stripe", "pi_OTHER")) is None
    unmatched = events_of(live, None, "webhook.unmatched")
    assert [e.data["stripe_event"] for e in unmatched] == ["evt_other", "evt_same"]
    assert events_of(live, queued.id, "run.settled") == []


def test_an_intent_for_another_amount_or_customer_does_not_settle_a_reconciliation(live, unanswered, client) -> None:  # noqa: F811
    run, intent = reconciling(live)
    for n, changes in enumerate(({"amount": 100}, {"currency": "usd"}, {"customer": "cus_someone_else"},
                                 {"customer": None})):
        answer = send(client, f"evt_other_{n}", "payment_intent.succeeded", other_intent(run.id, **{
            "amount": intent["amount"], "currency": intent["currency"], "customer": intent["customer"], **changes}))
        assert "no run" in answer["ignored"]
    stored = live.get(run.id)
    assert stored.status == "needs_reconciliation" and stored.settlement is None
    with live.runtime.db.read() as session:
        assert session.get(ExternalRef, ("stripe", "pi_OTHER")) is None
    assert [r.outcome for r in charges(live, run.id)] == ["unknown"]
    # the real intent still settles it
    assert send(client, "evt_real", "payment_intent.succeeded", {**intent, "status": "succeeded"})["run_id"] == run.id
    assert live.get(run.id).status == "succeeded"


def retrievals(live, run_id: str) -> list[AuditRecord]:  # noqa: F811
    return [r for r in live.audit(run_id) if (r.adapter, r.operation) == ("stripe", "retrieve")]


def test_a_forged_success_does_not_settle_what_stripe_says_failed(live, unanswered, client) -> None:  # noqa: F811
    """The body said succeeded and was believed: a leaked webhook secret, or a replayed body,
    ended a reconciliation as paid. Now the intent is asked of Stripe, and Stripe's word applies."""
    run, intent = reconciling(live)
    stripe_now(live, failed(intent))
    answer = send(client, "evt_forged", "payment_intent.succeeded", {**intent, "status": "succeeded"})
    assert answer["settlement"] == "failed" and "Stripe says requires_payment_method" in answer["note"]
    stored = live.get(run.id)
    assert stored.status == "needs_reconciliation" and stored.settlement == "failed"
    assert [r.outcome for r in charges(live, run.id)] == ["unknown"]  # no ok record
    # asked once, through the SDK with the account's key (the fake answers nothing else)
    [asked] = [r for r in live.servers["stripe"].received if r.method == "GET"]
    assert asked.path == f"/v1/payment_intents/{intent['id']}"
    assert asked.headers["authorization"] == f"Bearer {SECRETS['stripe']['secret_key']}"
    [record] = retrievals(live, run.id)
    assert record.mode == "live" and record.response["status"] == "requires_payment_method"
    [settled] = events_of(live, run.id, "run.settled")
    assert settled.data["event_status"] == "succeeded" and settled.data["stripe_status"] == "requires_payment_method"


def test_a_late_failure_body_for_a_paid_intent_reconciles_it_as_paid(live, unanswered, client) -> None:  # noqa: F811
    run, intent = reconciling(live)
    assert live.servers["stripe"].state.intents[intent["id"]]["status"] == "succeeded"
    answer = send(client, "evt_stale", "payment_intent.payment_failed", failed(intent))
    assert answer["settlement"] == "succeeded" and "Stripe says succeeded" in answer["note"]
    stored = live.get(run.id)
    assert stored.status == "succeeded" and stored.settlement == "succeeded" and stored.result["reconciled"]
    assert [r.outcome for r in charges(live, run.id)] == ["unknown", "ok"]


def test_an_intent_stripe_does_not_know_settles_nothing(live, unanswered, client) -> None:  # noqa: F811
    """A body naming the run, with its very amount, currency and customer, but an intent id that
    Stripe has never made: the body's claim fits, Stripe's answer does not."""
    run, intent = reconciling(live)
    forged = {**intent, "id": "pi_FORGED", "status": "succeeded"}
    answer = send(client, "evt_made_up", "payment_intent.succeeded", forged)
    assert "no run" in answer["ignored"]
    stored = live.get(run.id)
    assert stored.status == "needs_reconciliation" and stored.settlement is None
    [unmatched] = events_of(live, None, "webhook.unmatched")
    assert unmatched.data["unknown_to_stripe"] is True and unmatched.data["payment_intent"] == "pi_FORGED"
    with live.runtime.db.read() as session:
        assert session.get(ExternalRef, ("stripe", "pi_FORGED")) is None


def test_an_event_stripe_cannot_be_asked_about_is_answered_503_and_applied_when_delivered_again(
        live, unanswered, client) -> None:  # noqa: F811
    from sqlalchemy import func

    from aurora.models import WebhookReceipt

    run, intent = reconciling(live)
    state = live.servers["stripe"].state
    state.secret_key = "sk_test_rotated"  # Stripe refuses our key for the look-up
    event = {"id": "evt_later", "object": "event", "type": "payment_intent.succeeded",
             "data": {"object": {**intent, "status": "succeeded"}}}
    body = json.dumps(event).encode()
    answer = post(client, "/webhooks/stripe", body, **{"Stripe-Signature": stripe_header(body, secret=WHSEC)})
    assert answer.status_code == 503 and answer.headers["Retry-After"] and "again later" in answer.json["message"]
    assert SECRETS["stripe"]["secret_key"] not in answer.get_data(as_text=True)
    with live.runtime.db.read() as session:  # nothing kept: Stripe's next delivery is applied in full
        assert session.scalar(select(func.count()).select_from(WebhookReceipt)) == 0
    assert live.get(run.id).status == "needs_reconciliation"
    state.secret_key = SECRETS["stripe"]["secret_key"]
    again = post(client, "/webhooks/stripe", body, **{"Stripe-Signature": stripe_header(body, secret=WHSEC)})
    assert again.status_code == 200 and again.json["settlement"] == "succeeded"
    assert live.get(run.id).status == "succeeded"

"""Webhooks in: signatures made with each provider's own algorithm (and Stripe's SDK as a
cross-check), tampered bodies, old timestamps, replays, unknown runs, and a live charge settled."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import pytest
import stripe
from fakes import FakeServer, MailgunState, StripeState
from sqlalchemy import select
from test_adapters_live import SECRETS as LIVE_SECRETS
from test_adapters_live import Live

from aurora.models import AuditRecord, Event, Run

WHSEC = "whsec_testSECRET1234567890"
TYPEFORM_SECRET = "tf-hook-SECRET-abc"
MAILGUN_KEY = "mg-signing-SECRET-xyz"


@pytest.fixture
def hooks(env, runtime):
    secrets = {**LIVE_SECRETS,
               "stripe": {**LIVE_SECRETS["stripe"], "webhook_secret": WHSEC},
               "typeform": {**LIVE_SECRETS["typeform"], "webhook_secret": TYPEFORM_SECRET},
               "mailgun": {**LIVE_SECRETS["mailgun"], "webhook_signing_key": MAILGUN_KEY}}
    path = Path(env["AURORA_SECRETS_FILE"])
    path.write_text(json.dumps(secrets))
    path.chmod(0o600)
    return runtime


def stripe_header(body: bytes, secret: str = WHSEC, at: int | None = None, extra: str = "") -> str:
    stamp = at or int(time.time())
    signature = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},{extra}v1={signature}"


def stripe_event(event_id: str, type_: str, intent: str, **extra) -> bytes:
    return json.dumps({"id": event_id, "object": "event", "type": type_,
                       "data": {"object": {"id": intent, "object": "payment_intent", **extra}}}).encode()


def post(client, path: str, body: bytes, **headers):
    return client.post(path, data=body, headers={"Content-Type": "application/json", **headers})


def rejections(runtime) -> list[AuditRecord]:
    with runtime.db.read() as session:
        return list(session.scalars(select(AuditRecord).where(AuditRecord.outcome == "rejected")))


def test_stripe_signature_scheme_matches_the_official_sdk() -> None:
    body = stripe_event("evt_1", "payment_intent.succeeded", "pi_1")
    header = stripe_header(body)
    assert stripe.WebhookSignature.verify_header(body.decode(), header, WHSEC, tolerance=300)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(body.decode() + " ", header, WHSEC, tolerance=300)
    from aurora.webhooks import verify_stripe

    sdk_signed = stripe.WebhookSignature._compute_signature(f"{int(time.time())}.{body.decode()}", WHSEC)
    verify_stripe(body, f"t={int(time.time())},v1={sdk_signed}", WHSEC)


def test_stripe_rejects_tampering_old_timestamps_and_missing_headers(client, hooks) -> None:
    body = stripe_event("evt_1", "payment_intent.succeeded", "pi_1")
    tampered = post(client, "/webhooks/stripe", body.replace(b"pi_1", b"pi_2"), **{"Stripe-Signature": stripe_header(body)})
    assert tampered.status_code == 401 and "does not match" in tampered.json["message"]
    old = post(client, "/webhooks/stripe", body, **{"Stripe-Signature": stripe_header(body, at=int(time.time()) - 301)})
    assert old.status_code == 401 and "tolerance" in old.json["message"]
    assert post(client, "/webhooks/stripe", body).status_code == 401
    wrong_key = post(client, "/webhooks/stripe", body, **{"Stripe-Signature": stripe_header(body, secret="whsec_other")})
    assert wrong_key.status_code == 401
    records = rejections(hooks)  # one record per reason: the wrong key's refusal is only counted
    assert len(records) == 3 and all(r.adapter == "stripe" for r in records)
    assert all("pi_1" not in json.dumps(r.request) and WHSEC not in json.dumps(r.request) for r in records)
    with hooks.db.read() as session:
        assert session.scalar(select(Event).where(Event.type.like("run.settled"))) is None


def rejected_count(client, admin_key: str, reason: str) -> float:
    """The counter as this process holds it (its own file of the multiprocess folder: earlier tests
    of the session may have pointed the folder that /metrics reads elsewhere)."""
    from aurora import metrics

    assert client.get("/metrics", headers={"Authorization": f"Bearer {admin_key}"}).status_code == 200
    return metrics._metrics()["webhooks_rejected"].labels("stripe", reason[:80])._value.get()  # noqa: SLF001


def test_forged_webhooks_are_counted_and_sampled_never_one_record_each(client, hooks, api_keys,
                                                                       monkeypatch) -> None:
    """1,500 forged POSTs made 1,500 chained records before: now a metric and one record a window."""
    from aurora import webhooks

    reason = "Stripe signature does not match the body"
    before = rejected_count(client, api_keys.admin, reason)
    body = stripe_event("evt_forged", "payment_intent.succeeded", "pi_1")
    forged = {"Stripe-Signature": stripe_header(body, secret="whsec_forger")}
    for _ in range(200):
        assert post(client, "/webhooks/stripe", body, **forged).status_code == 401
    assert len(rejections(hooks)) == 1
    assert rejected_count(client, api_keys.admin, reason) - before == 200
    monkeypatch.setattr(webhooks.SAMPLER, "interval", 0.2)
    time.sleep(0.25)
    assert post(client, "/webhooks/stripe", body, **forged).status_code == 401
    records = rejections(hooks)
    assert [r.request["refused"] for r in records] == [1, 200]  # the second stands for 199 + itself


def test_any_v1_may_match(client, hooks) -> None:
    body = stripe_event("evt_2", "customer.created", "cus_1")
    header = stripe_header(body, extra="v1=" + "0" * 64 + ",")
    assert post(client, "/webhooks/stripe", body, **{"Stripe-Signature": header}).status_code == 200


def test_a_live_charge_is_settled_by_its_webhook_once(client, hooks, env) -> None:
    state = StripeState(LIVE_SECRETS["stripe"]["secret_key"])
    with FakeServer(state) as server:  # up throughout: each event's intent is asked of Stripe
        live = Live(hooks, env, {"stripe": server, "mailgun": server, "typeform": server, "social": server})
        live.set_policy()
        run = live.run("charge", {"customer": "cus_async", "amount": "80.00", "currency": "EUR", "payment_method": "pm_1"})
        _settled_once(client, hooks, run, state)


def _settled_once(client, hooks, run, state) -> None:
    assert run.status == "succeeded" and run.settlement == "pending"
    intent = run.result["response"]["id"]
    state.intents[intent]["status"] = "succeeded"  # the payment went through at Stripe
    body = stripe_event("evt_ok", "payment_intent.succeeded", intent, status="succeeded")
    first = post(client, "/webhooks/stripe", body, **{"Stripe-Signature": stripe_header(body)})
    assert first.status_code == 200 and first.json["settlement"] == "succeeded" and first.json["run_id"] == run.id
    again = post(client, "/webhooks/stripe", body, **{"Stripe-Signature": stripe_header(body)})
    assert again.json["duplicate"] is True
    detail = client.get(f"/workflows/{run.id}", headers={"Authorization": f"Bearer {_viewer(hooks)}"}).json
    assert detail["settlement"] == "succeeded"
    assert [e["type"] for e in detail["timeline"]].count("run.settled") == 1
    late = stripe_event("evt_late", "payment_intent.payment_failed", intent, status="requires_payment_method")
    stale = post(client, "/webhooks/stripe", late, **{"Stripe-Signature": stripe_header(late)})
    assert stale.status_code == 200 and stale.json["settlement"] == "succeeded" and "Stripe says" in stale.json["note"]
    detail = client.get(f"/workflows/{run.id}", headers={"Authorization": f"Bearer {_viewer(hooks)}"}).json
    assert detail["settlement"] == "succeeded"  # a late failure never turns a success back
    unknown = stripe_event("evt_x", "payment_intent.payment_failed", "pi_unknown")
    answer = post(client, "/webhooks/stripe", unknown, **{"Stripe-Signature": stripe_header(unknown)})
    assert answer.status_code == 200 and "no run" in answer.json["ignored"]


def _viewer(runtime) -> str:
    from aurora import keys
    from aurora.models import Role

    return keys.create(runtime.db, f"viewer{time.monotonic_ns()}", Role.VIEWER)


def typeform_body(token: str = "resp_1", form: str = "FORM1", email: str = "neu@example.com") -> bytes:
    return json.dumps({"event_id": f"ev_{token}", "event_type": "form_response", "form_response": {
        "form_id": form, "token": token, "submitted_at": "2026-11-25T10:00:00Z",
        "answers": [{"type": "email", "email": email, "field": {"id": "f1", "ref": "email", "type": "email"}},
                    {"type": "choice", "choice": {"label": "Pferd"}, "field": {"id": "f2", "ref": "tier"}}]}}).encode()


def typeform_signature(body: bytes, secret: str = TYPEFORM_SECRET) -> str:
    return "sha256=" + base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def test_typeform_verified_deduplicated_and_mapped_to_a_workflow(client, hooks, env) -> None:
    policy = json.loads(Path(env["AURORA_POLICY_FILE"]).read_text())
    policy["allow_typeform_auto_ingest"] = True
    policy["typeform_workflows"] = {"FORM1": {"name": "welcome", "goal": "send_email", "payload": {
        "to": "{{email}}", "subject": "Willkommen, {{tier}}-Freund", "template": "welcome"}}}
    Path(env["AURORA_POLICY_FILE"]).write_text(json.dumps(policy))
    hooks.policies._mtime, hooks.policies._checked_at = None, 0  # noqa: SLF001
    body = typeform_body()
    first = post(client, "/webhooks/typeform", body, **{"Typeform-Signature": typeform_signature(body)})
    assert first.status_code == 200 and first.json["run_id"]
    with hooks.db.read() as session:
        run = session.scalar(select(Run).where(Run.id == first.json["run_id"]))
        stored = list(session.scalars(select(Event).where(Event.type == "typeform.response")))
    assert run.document["payload"]["to"] == "neu@example.com"
    assert run.document["payload"]["subject"] == "Willkommen, Pferd-Freund"
    assert run.document["payload"]["variables"]["answers"] == {"email": "neu@example.com", "tier": "Pferd"}
    assert run.submitted_by == "typeform-webhook" and len(stored) == 1
    again = post(client, "/webhooks/typeform", body, **{"Typeform-Signature": typeform_signature(body)})
    assert again.json["duplicate"] is True
    tampered = post(client, "/webhooks/typeform", body.replace(b"neu@", b"evil@"),
                    **{"Typeform-Signature": typeform_signature(body)})
    assert tampered.status_code == 401
    other = typeform_body("resp_2", form="OTHER")
    unknown_form = post(client, "/webhooks/typeform", other, **{"Typeform-Signature": typeform_signature(other)})
    assert unknown_form.status_code == 200 and unknown_form.json["run_id"] is None
    for response in (first, again, tampered, unknown_form):
        assert response.status_code not in (404, 410)


def mailgun_body(run_id: str | None, event: str = "delivered", token: str = "tok-1", at: float | None = None,
                 key: str = MAILGUN_KEY, message_id: str | None = None) -> bytes:
    stamp = str(int(at or time.time()))
    signature = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    data = {"id": f"mg-{token}", "event": event, "recipient": "a@example.com",
            "user-variables": {"aurora_run_id": run_id} if run_id else {}}
    if message_id:
        data["message"] = {"headers": {"message-id": message_id}}
    return json.dumps({"signature": {"timestamp": stamp, "token": token, "signature": signature},
                       "event-data": data}).encode()


def test_mailgun_events_recorded_against_the_run_and_replays_refused(client, hooks, env) -> None:
    from aurora import documents

    state = MailgunState(LIVE_SECRETS["mailgun"]["api_key"])
    with FakeServer(state) as server:
        live = Live(hooks, env, {"stripe": server, "mailgun": server, "typeform": server, "social": server})
        live.set_policy()
        run = live.run("send_email", {"to": "a@example.com", "subject": "s", "text": "t"})
        other = live.run("send_email", {"to": "b@example.com", "subject": "s", "text": "t"})
    assert run.status == other.status == "succeeded", run.error
    sent = run.result["response"]["id"].strip("<>")  # the id Mailgun answered the send with
    delivered = post(client, "/webhooks/mailgun", mailgun_body(run.id, message_id=sent))
    assert delivered.status_code == 200 and delivered.json["event"] == "mail.delivered", delivered.json
    replay = post(client, "/webhooks/mailgun", mailgun_body(run.id, message_id=sent))
    assert replay.status_code == 401 and "replay" in replay.json["message"]
    failed = post(client, "/webhooks/mailgun", mailgun_body(None, "failed", token="tok-2", message_id=f"<{sent}>"))
    assert failed.json["event"] == "mail.failed" and failed.json["run_id"] == run.id  # the message id decides
    stale = post(client, "/webhooks/mailgun", mailgun_body(run.id, token="tok-3", at=time.time() - 600, message_id=sent))
    assert stale.status_code == 401 and "tolerance" in stale.json["message"]
    forged = post(client, "/webhooks/mailgun", mailgun_body(run.id, token="tok-4", key="wrong", message_id=sent))
    assert forged.status_code == 401
    unknown = post(client, "/webhooks/mailgun", mailgun_body("no-such-run", token="tok-5", message_id=sent))
    assert unknown.status_code == 200 and "ignored" in unknown.json
    charge = hooks.engine.submit(documents.load(
        'name: c\ngoal: charge\npayload: {customer: cus_1, amount: "1.00", currency: EUR}'), "sam")
    for n, body in enumerate((
            mailgun_body(charge.id, token="tok-6"),  # a charge sent no mail
            mailgun_body(charge.id, token="tok-7", message_id=sent),  # ... and this mail is another run's
            mailgun_body(other.id, token="tok-8", message_id=sent),  # a run that sent mail, but not this one
            mailgun_body(run.id, token="tok-9"))):  # no message id: nothing ties the event to a send
        elsewhere = post(client, "/webhooks/mailgun", body)
        assert elsewhere.status_code == 200 and "ignored" in elsewhere.json, n
    assert post(client, "/webhooks/mailgun", b"not json").status_code == 400
    with hooks.db.read() as session:
        types = list(session.scalars(select(Event.type).where(Event.run_id == run.id).order_by(Event.seq)))
    assert types.count("mail.delivered") == 1 and types.count("mail.failed") == 1
    with hooks.db.read() as session:
        for elsewhere_id in (charge.id, other.id):
            assert session.scalar(select(Event).where(Event.run_id == elsewhere_id, Event.type.like("mail.%"))) is None


def test_unconfigured_secret_refuses_politely(client, runtime) -> None:
    answer = post(client, "/webhooks/stripe", b"{}", **{"Stripe-Signature": "t=1,v1=x"})
    assert answer.status_code == 403 and "webhook_secret is not configured" in answer.json["message"]


@pytest.mark.parametrize("stamp", ["nan", "NaN", "inf", "-inf"])
def test_a_mailgun_timestamp_that_is_not_a_finite_number_is_refused(client, hooks, stamp) -> None:
    """A correctly signed "nan" passed the freshness check: every comparison with nan is false."""
    signature = hmac.new(MAILGUN_KEY.encode(), (stamp + "tok-nan").encode(), hashlib.sha256).hexdigest()
    body = json.dumps({"signature": {"timestamp": stamp, "token": "tok-nan", "signature": signature},
                       "event-data": {"id": "mg-nan", "event": "delivered", "recipient": "a@example.com"}}).encode()
    response = post(client, "/webhooks/mailgun", body)
    assert response.status_code == 401 and "not a number" in response.json["message"]


@pytest.mark.parametrize("obj, status", [
    ([1, 2], 400),  # data.object not an object
    ("data-not-an-object", 200),  # data itself is no object: nothing to act on
    ({"id": 12345, "object": "payment_intent"}, 200),  # an id that is not a string matches nothing
    ({"id": "pi_1", "object": "payment_intent", "metadata": "aurora_run_id=x"}, 200),  # metadata not an object
])
def test_an_odd_but_signed_stripe_event_is_a_clear_answer_never_a_500(client, hooks, obj, status) -> None:
    data = obj if obj == "data-not-an-object" else {"object": obj}
    body = json.dumps({"id": "evt_odd", "object": "event", "type": "payment_intent.succeeded",
                       "data": data}).encode()
    answer = post(client, "/webhooks/stripe", body, **{"Stripe-Signature": stripe_header(body)})
    assert answer.status_code == status and answer.is_json, answer.get_data(as_text=True)
    if status == 200:
        assert "no run" in answer.json["ignored"]


@pytest.mark.parametrize("data", [
    [1, 2],  # event-data not an object
    {"id": "mg-odd", "event": "delivered", "user-variables": "aurora_run_id=x"},
    {"id": "mg-odd", "event": ["delivered"], "message": "not an object"},
    {"id": "mg-odd", "event": "delivered", "message": {"headers": ["message-id"]}},
])
def test_an_odd_but_signed_mailgun_event_is_answered_never_a_500(client, hooks, data) -> None:
    stamp, token = str(int(time.time())), f"tok-odd-{json.dumps(data)}"
    signature = hmac.new(MAILGUN_KEY.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    body = json.dumps({"signature": {"timestamp": stamp, "token": token, "signature": signature},
                       "event-data": data}).encode()
    answer = post(client, "/webhooks/mailgun", body)
    assert answer.status_code == 200 and "ignored" in answer.json, answer.get_data(as_text=True)


@pytest.mark.parametrize("response", [
    [1], {"form_id": "FORM1", "token": ["t"]},
    {"form_id": "FORM1", "token": "odd1", "answers": "not a list"},
    {"form_id": "FORM1", "token": "odd2", "answers": [{"type": ["email"], "field": "f"}, 3]},
])
def test_an_odd_but_signed_typeform_response_is_answered_never_a_500(client, hooks, response) -> None:
    body = json.dumps({"event_id": "ev_odd", "event_type": "form_response", "form_response": response}).encode()
    answer = post(client, "/webhooks/typeform", body, **{"Typeform-Signature": typeform_signature(body)})
    assert answer.status_code in (200, 400) and answer.is_json, answer.get_data(as_text=True)


PAY_AFTER_FORM = """name: pay_after_form
on:
  typeform: {form_id: FORM1, inputs: {customer_email: email}}
inputs:
  customer_email: {type: string, format: email}
steps:
  - {id: welcome, goal: send_email, payload: {to: "{{ inputs.customer_email }}", subject: Willkommen, text: Hallo}}
"""


def test_a_definitions_typeform_trigger_starts_it_once_per_answer(client, hooks, env) -> None:
    from aurora import definitions

    definitions.apply(hooks.db, PAY_AFTER_FORM, "admin")
    body = typeform_body()
    signed = {"Typeform-Signature": typeform_signature(body)}
    off = post(client, "/webhooks/typeform", body, **signed)  # allow_typeform_auto_ingest is off
    assert off.status_code == 200 and "definition_runs" not in off.json
    policy = json.loads(Path(env["AURORA_POLICY_FILE"]).read_text())
    policy["allow_typeform_auto_ingest"] = True
    Path(env["AURORA_POLICY_FILE"]).write_text(json.dumps(policy))
    hooks.policies._mtime, hooks.policies._checked_at = None, 0  # noqa: SLF001
    second = typeform_body("resp_2")
    answered = post(client, "/webhooks/typeform", second, **{"Typeform-Signature": typeform_signature(second)})
    [run_id] = answered.json["definition_runs"]
    with hooks.db.read() as session:
        run = session.scalar(select(Run).where(Run.id == run_id))
        triggered = session.scalar(select(Event).where(Event.run_id == run_id, Event.type == "run.triggered"))
    assert run.definition == "pay_after_form" and run.inputs == {"customer_email": "neu@example.com"}
    assert triggered.data["by"] == "typeform"
    again = post(client, "/webhooks/typeform", second, **{"Typeform-Signature": typeform_signature(second)})
    assert again.json["duplicate"] is True

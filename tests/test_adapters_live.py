"""Live adapters against fake provider servers: exact requests, retries, the switches, canary,
rollback, idempotency, reconciliation, and secrets that never leak."""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import shown as current_hash
from conftest import whole_run
from fakes import FakeServer, GraphState, MailgunState, Reply, StripeState, TypeformState
from sqlalchemy import select, update

from aurora import adapter_state, documents
from aurora.adapters import CallContext, decide_mode
from aurora.adapters.base import canary_bucket
from aurora.adapters.mailgun_adapter import MailgunAdapter
from aurora.models import Approval, AuditRecord, Event, Run, RunStep, utcnow
from aurora.policy import parse_policy
from aurora.secrets import Secrets, load_secrets

ROOT = Path(__file__).resolve().parent.parent
SECRETS = {
    "stripe": {"secret_key": "sk_test_liveSECRET4242", "webhook_secret": "whsec_liveSECRET"},
    "mailgun": {"api_key": "key-liveSECRET7777", "domain": "mg.example.com", "from": "noreply@example.com"},
    "typeform": {"token": "tfp_liveSECRET8888", "form_id": "FORM1"},
    "social": {"facebook": {"access_token": "EAAliveSECRET", "page_id": "page1"},
               "instagram": {"access_token": "IGQliveSECRET", "account_id": "ig1"}},
}
SECRET_VALUES = ["sk_test_liveSECRET4242", "whsec_liveSECRET", "key-liveSECRET7777", "tfp_liveSECRET8888",
                 "EAAliveSECRET", "IGQliveSECRET"]


class Live:
    def __init__(self, runtime, env, servers):
        self.runtime, self.env, self.servers = runtime, env, servers

    def policy(self, **changes) -> dict:
        data = json.loads((ROOT / "policy" / "batch8_policy.json").read_text())
        data.update(dry_run=False, allow_payments=True, allow_external_posting=True, allow_typeform_auto_ingest=True)
        data["security"]["canary_percent"] = 100
        for name, server in self.servers.items():
            data["adapters"][name].update(base_url=server.url, retries=1, timeout_seconds=1)
        data["adapters"]["social"]["publish_poll_seconds"] = 0.05
        for name in ("typeform", "social"):
            data["adapters"][name]["rate_limit"] = "100/second"
        for key, value in changes.items():
            section, _, leaf = key.partition("__")
            if leaf:
                sub, _, leaf2 = leaf.partition("__")
                target = data[section][sub] if leaf2 else data[section]
                target[leaf2 or leaf] = value
            else:
                data[key] = value
        return data

    def set_policy(self, **changes) -> None:
        Path(self.env["AURORA_POLICY_FILE"]).write_text(json.dumps(self.policy(**changes)))
        self.runtime.policies._mtime, self.runtime.policies._checked_at = None, 0  # noqa: SLF001

    def run(self, goal: str, payload: dict, approve: bool = True) -> Run:
        doc = {"name": "live", "goal": goal, "payload": payload}
        engine = self.runtime.engine
        run = engine.submit(documents.load(json.dumps(doc), fmt="json"), "sam")
        engine.execute(run.id)
        stored = self.get(run.id)
        if stored.status == "awaiting_approval" and approve:
            with self.runtime.db.write() as session:
                for voter in ("alice", "bob"):
                    session.add(Approval(run_id=run.id, voter=voter, decision="approve", channel="api",
                                         document_hash=stored.document_hash,
                                 request_hash=stored.approval_binding["hash"]))
                session.execute(update(Run).where(Run.id == run.id).values(status="queued"))
            engine.execute(run.id)
        return self.get(run.id)

    def get(self, run_id: str) -> Run:
        with self.runtime.db.read() as session:
            return whole_run(session, session.scalar(select(Run).where(Run.id == run_id)))

    def audit(self, run_id: str) -> list[AuditRecord]:
        with self.runtime.db.read() as session:
            return list(session.scalars(select(AuditRecord).where(AuditRecord.run_id == run_id)))


@pytest.fixture
def live(runtime, env):
    stripe = StripeState(SECRETS["stripe"]["secret_key"])
    mailgun = MailgunState(SECRETS["mailgun"]["api_key"])
    typeform = TypeformState(SECRETS["typeform"]["token"], "FORM1", 2500)
    graph = GraphState(SECRETS["social"]["facebook"]["access_token"], SECRETS["social"]["instagram"]["access_token"])
    with FakeServer(stripe) as s, FakeServer(mailgun) as m, FakeServer(typeform) as t, FakeServer(graph) as g:
        s.state, m.state, t.state, g.state = stripe, mailgun, typeform, graph
        secrets = Path(env["AURORA_SECRETS_FILE"])
        secrets.write_text(json.dumps(SECRETS))
        secrets.chmod(0o600)
        harness = Live(runtime, env, {"stripe": s, "mailgun": m, "typeform": t, "social": g})
        harness.set_policy()
        yield harness


CHARGE = {"customer": "cus_42", "amount": "150.00", "currency": "EUR", "description": "Rechnung 1"}


def test_stripe_payment_intent_exact_request(live) -> None:
    run = live.run("charge", CHARGE)
    assert run.status == "succeeded", run.error
    assert run.result["mode"] == "live" and run.result["response"]["id"] == "pi_0001"
    server = live.servers["stripe"]
    # the customer is looked up when the live charge is rendered for approvers and again in the
    # transaction that begins it; the charge is for the payment method the votes approved
    *lookups, intent = server.received
    assert lookups and all(c.method == "GET" and c.path == "/v1/customers/cus_42" for c in lookups)
    form = {k: v[0] for k, v in intent.form().items()}
    assert form["amount"] == "15000" and form["currency"] == "eur" and form["customer"] == "cus_42"
    assert form["confirm"] == "true" and form["off_session"] == "true" and form["payment_method"] == "pm_card_visa"
    assert form["metadata[aurora_run_id]"] == run.id
    assert intent.headers["idempotency-key"] == f"aurora-{run.id}-stripe-charge"
    assert intent.headers["authorization"] == f"Bearer {SECRETS['stripe']['secret_key']}"


def test_zero_decimal_currency_minor_units(live) -> None:
    run = live.run("charge", {**CHARGE, "amount": "5000", "currency": "JPY", "payment_method": "pm_1"})
    assert run.status == "succeeded"
    assert live.servers["stripe"].state.intents["pi_0001"]["amount"] == 5000


def test_stripe_retries_a_5xx_with_the_same_key_and_never_a_decline(live) -> None:
    server = live.servers["stripe"]
    server.script("/v1/payment_intents", Reply(500, {"error": {"type": "api_error"}}, {"Stripe-Should-Retry": "true"}))
    run = live.run("charge", {**CHARGE, "payment_method": "pm_1"})
    assert run.status == "succeeded"
    attempts = server.requests_to("/v1/payment_intents")
    assert len(attempts) == 2 and len({a.headers["idempotency-key"] for a in attempts}) == 1
    assert len(server.state.intents) == 1

    declined = live.run("charge", {**CHARGE, "customer": "cus_declined", "payment_method": "pm_1"})
    assert declined.status == "failed" and declined.error["kind"] == "declined"
    assert len(server.requests_to("/v1/payment_intents")) == 3  # one try only
    assert not adapter_state.load(live.runtime.db)["stripe"].rolled_back  # a decline is not the adapter's fault


def test_should_retry_false_is_honoured(live) -> None:
    server = live.servers["stripe"]
    server.script("/v1/payment_intents", Reply(500, {"error": {"type": "api_error"}}, {"Stripe-Should-Retry": "false"}))
    run = live.run("charge", {**CHARGE, "payment_method": "pm_1"})
    assert run.status == "failed"
    assert len(server.requests_to("/v1/payment_intents")) == 1


def test_live_failure_rolls_the_adapter_back_until_enabled(live) -> None:
    live.servers["stripe"].state.secret_key = "sk_test_rotated"  # our key is now wrong
    failed = live.run("charge", {**CHARGE, "payment_method": "pm_1"})
    assert failed.status == "failed" and failed.error["kind"] == "auth"
    rollout = adapter_state.load(live.runtime.db)["stripe"]
    assert rollout.rolled_back
    with live.runtime.db.read() as session:
        assert session.scalar(select(Event).where(Event.type == "adapter.rolled_back")) is not None
        assert session.scalar(select(AuditRecord).where(AuditRecord.operation == "rollback")) is not None
    # A charge the policy means live is not simulated in its place while rolled back: not_acted.
    after = live.run("charge", {**CHARGE, "payment_method": "pm_1"})
    assert after.status == "not_acted" and after.error["type"] == "would_be_simulated"
    assert "rolled back" in after.error["mode_reason"] and "aurora adapters enable stripe" in after.error["what_to_do"]
    live.servers["stripe"].state.secret_key = SECRETS["stripe"]["secret_key"]
    adapter_state.enable(live.runtime.db, "stripe", "test-node")
    assert live.run("charge", {**CHARGE, "payment_method": "pm_1"}).result["mode"] == "live"


def test_mailgun_exact_request(live) -> None:
    run = live.run("send_email", {"to": ["a@example.com", "b@example.com"], "subject": "Bericht",
                                  "template": "monthly_report", "variables": {"monat": "Oktober"}})
    assert run.status == "succeeded", run.error
    assert run.result["response"]["message"] == "Queued. Thank you."
    [request] = live.servers["mailgun"].received
    assert request.path == "/v3/mg.example.com/messages"
    form = request.form()
    assert form["to"] == ["a@example.com", "b@example.com"] and form["from"] == ["noreply@example.com"]
    assert form["template"] == ["monthly_report"] and json.loads(form["t:variables"][0]) == {"monat": "Oktober"}
    assert form["v:aurora_run_id"] == [run.id]


def test_mailgun_sender_and_reply_to_reach_mailgun_and_the_approver(live) -> None:
    """A document's ``from`` and ``reply_to`` are sent as Mailgun's ``from`` and ``h:Reply-To``,
    and shown to (and bound for) whoever approves the mail."""
    from aurora import binding

    payload = {"to": "a@example.com", "subject": "Bericht", "text": "Hallo", "from": "Laden <laden@mg.example.com>",
               "reply_to": "hilfe@example.com", "require_approval": True}
    waiting = live.run("send_email", payload, approve=False)
    assert waiting.status == "awaiting_approval"
    rows = dict(binding.plain("send_email", waiting.document["payload"], waiting.approval_binding))
    assert rows["From"] == "Laden <laden@mg.example.com>" and rows["Reply-To"] == "hilfe@example.com"
    other = live.run("send_email", {**payload, "reply_to": "mallory@example.com"}, approve=False)
    assert other.approval_binding["hash"] != waiting.approval_binding["hash"]  # a vote is for this Reply-To
    run = live.run("send_email", payload)
    assert run.status == "succeeded", run.error
    [request] = live.servers["mailgun"].received
    form = request.form()
    assert form["from"] == ["Laden <laden@mg.example.com>"] and form["h:Reply-To"] == ["hilfe@example.com"]


def test_a_line_break_in_the_accounts_sender_never_reaches_mailgun(live) -> None:
    """The secrets file's ``from`` is no document, so no schema looked at it: the adapter does."""
    secrets = Path(live.env["AURORA_SECRETS_FILE"])
    secrets.write_text(json.dumps({**SECRETS, "mailgun": {**SECRETS["mailgun"],
                                                          "from": "noreply@example.com\r\nBcc: all@example.com"}}))
    run = live.run("send_email", {"to": "a@example.com", "subject": "s", "text": "t"})
    assert run.status == "failed" and "secrets mailgun.from has a line break" in json.dumps(run.error)
    assert live.servers["mailgun"].received == []


def test_mailgun_region_picks_the_base_url(live) -> None:
    data = live.policy()
    data["adapters"]["mailgun"].pop("base_url")
    data["adapters"]["mailgun"]["region"] = "eu"
    ctx = CallContext("r1", parse_policy(json.dumps(data)), Secrets())
    assert MailgunAdapter().build({"to": "a@example.com", "subject": "s", "text": "t"}, ctx)["url"].startswith(
        "https://api.eu.mailgun.net/v3/")


def test_mailgun_429_waits_for_retry_after(live) -> None:
    server = live.servers["mailgun"]
    server.script("/v3/", Reply(429, {"message": "slow down"}, {"Retry-After": "0.3"}))
    started = time.monotonic()
    run = live.run("send_email", {"to": "a@example.com", "subject": "s", "text": "t"})
    assert run.status == "succeeded" and time.monotonic() - started >= 0.3
    assert len(server.received) == 2 and len(server.state.sent) == 1


def test_a_retry_after_above_the_ceiling_fails_the_call_without_a_rollback(live) -> None:
    """It failed after one request, said "after 3 attempts" and rolled the adapter back."""
    from aurora import adapter_state

    server = live.servers["mailgun"]
    server.script("/v3/", Reply(429, {"message": "slow down"}, {"Retry-After": "900"}))  # default ceiling 300
    run = live.run("send_email", {"to": "a@example.com", "subject": "s", "text": "t"})
    text = json.dumps(run.error)
    assert run.status == "failed" and "wait 900 s" in text and "max_retry_after_seconds" in text, text
    assert "3 attempts" not in text and len(server.received) == 1
    assert not adapter_state.load(live.runtime.db)["mailgun"].rolled_back
    assert live.run("send_email", {"to": "a@example.com", "subject": "s", "text": "t"}).status == "succeeded"


def test_a_retry_after_within_the_ceiling_queues_the_run_for_later_instead_of_sleeping(live) -> None:
    """A worker used to sleep through it (up to 60 s) or fail; now the run waits in the queue,
    the sweeper does not send it early, and it succeeds once the time has come."""
    from datetime import timedelta

    from aurora import sweeper

    server = live.servers["mailgun"]
    server.script("/v3/", Reply(429, {"message": "slow down"}, {"Retry-After": "120"}))
    started = time.monotonic()
    run = live.run("send_email", {"to": "a@example.com", "subject": "s", "text": "t"})
    assert time.monotonic() - started < 10, "the worker slept through the Retry-After"
    assert run.status == "queued" and len(server.received) == 1 and server.state.sent == []
    assert run.enqueued_at > utcnow() + timedelta(seconds=110) and run.lease_owner is None
    assert not adapter_state.load(live.runtime.db)["mailgun"].rolled_back
    with live.runtime.db.read() as session:
        assert "act" not in session.scalars(select(RunStep.step).where(RunStep.run_pk == select(Run.pk).where(Run.id == run.id).scalar_subquery())).all()
        deferred = session.scalars(select(Event).where(Event.run_id == run.id, Event.type == "run.queued")).all()
    assert deferred[-1].data["retry_after_seconds"] == 120 and "not_before" in deferred[-1].data
    [record] = [r for r in live.audit(run.id) if r.adapter == "mailgun"]
    assert record.outcome == "error" and "Retry-After" in record.reason
    # The broker holds no message for it (a worker keeps the delayed one): still not resent.
    assert run.id not in sweeper.sweep(live.runtime.engine, waiting=0)
    with live.runtime.db.write() as session:  # the two minutes pass
        session.execute(update(Run).where(Run.id == run.id).values(enqueued_at=utcnow()))
    assert live.runtime.engine.execute(run.id).status == "succeeded"
    assert len(server.state.sent) == 1


def test_mailgun_timeout_after_sending_is_not_resent(live) -> None:
    server = live.servers["mailgun"]
    server.script("/v3/", Reply(200, {"id": "<x>", "message": "Queued"}, delay=1.5))
    run = live.run("send_email", {"to": "a@example.com", "subject": "s", "text": "t"})
    assert run.status == "needs_reconciliation" and run.error["type"] == "needs_reconciliation"
    assert run.error["idempotency_key"] == f"aurora-{run.id}-mailgun-send"
    assert len(server.received) == 1
    assert not adapter_state.load(live.runtime.db)["mailgun"].promoted


def test_interrupted_live_mail_is_reconciled_not_resent(live) -> None:
    engine = live.runtime.engine
    run = engine.submit(documents.load("name: m\ngoal: send_email\npayload: {to: a@example.com, subject: s, text: t}"),
                        "sam")
    with live.runtime.db.write() as session:  # a worker began the live send, then died
        session.execute(update(Run).where(Run.id == run.id).values(
            status="running", step="act", attempts=1, lease_owner="dead", lease_expires_at=utcnow()))
        session.add(RunStep(run_pk=session.scalar(select(Run.pk).where(Run.id == run.id)), step="act", status="started", result={"mode": "live"}))
    engine.execute(run.id)
    stored = live.get(run.id)
    assert stored.status == "needs_reconciliation" and stored.error["type"] == "needs_reconciliation"
    assert live.servers["mailgun"].received == []


def test_typeform_pages_cursor_and_dedup(live) -> None:
    first = live.run("ingest_forms", {"form_id": "FORM1"})
    assert first.status == "succeeded", first.error
    assert first.result["response"]["received"] == 2500 and first.result["response"]["new"] == 2500
    requests_ = live.servers["typeform"].received
    assert [r.query.get("after", [None])[0] for r in requests_] == [None, "tok00999", "tok01999"]
    assert requests_[0].query["sort"] == ["submitted_at,asc"] and requests_[0].query["page_size"] == ["1000"]
    live.servers["typeform"].state.add(5)
    second = live.run("ingest_forms", {"form_id": "FORM1"})
    assert second.result["response"]["new"] == 5
    assert live.servers["typeform"].received[-1].query["after"] == ["tok02499"]
    with live.runtime.db.read() as session:
        tokens = [e.data["token"] for e in session.scalars(select(Event).where(Event.type == "typeform.response"))]
    assert len(tokens) == len(set(tokens)) == 2505


def test_typeform_rate_limit_spaces_requests(live) -> None:
    live.set_policy(adapters__typeform__rate_limit="2/second")
    live.servers["typeform"].state.responses = live.servers["typeform"].state.responses[:2500]
    started = time.monotonic()
    live.run("ingest_forms", {"form_id": "FORM1"})
    assert time.monotonic() - started >= 0.9  # three requests at two per second


def test_facebook_post_keeps_the_token_out_of_urls(live) -> None:
    run = live.run("post_external", {"platform": "facebook", "content": "Herbst-Tipps"})
    assert run.status == "succeeded", run.error
    [request] = live.servers["social"].received
    assert request.path == "/v21.0/page1/feed" and request.form()["message"] == ["Herbst-Tipps"]
    assert "EAA" not in request.path + json.dumps(request.query) + request.body.decode()


def test_instagram_two_step_publish(live) -> None:
    run = live.run("post_external", {"platform": "instagram", "content": "Hallo", "media_url": "https://e.com/a.jpg"})
    assert run.status == "succeeded", run.error
    graph = live.servers["social"]
    paths = [(r.method, r.path) for r in graph.received]
    assert paths[0] == ("POST", "/v21.0/ig1/media") and paths[-1] == ("POST", "/v21.0/ig1/media_publish")
    assert ("GET", "/v21.0/c1") in paths
    assert graph.state.published == ["c1"] and run.result["response"]["id"] == "media_1"


def test_timed_out_facebook_post_is_checked_before_retrying(live) -> None:
    graph = live.servers["social"]
    original = graph.default

    def slow_first_post(request):
        reply = original(request)
        if request.method == "POST" and len(graph.state.posts) == 1:
            reply.delay = 1.5  # posted, but the answer comes too late
        return reply

    graph.default = slow_first_post
    run = live.run("post_external", {"platform": "facebook", "content": "Nur einmal"})
    assert run.status == "succeeded" and run.result["response"]["verified_after_timeout"] is True
    assert len(graph.state.posts) == 1


def test_graph_auth_error_code_190_is_classified(live) -> None:
    live.servers["social"].state.tokens = {"EAArotated"}
    run = live.run("post_external", {"platform": "facebook", "content": "x"})
    assert run.error["kind"] == "auth" and adapter_state.load(live.runtime.db)["social"].rolled_back


def rollout(promoted=False, rolled_back=False):
    return adapter_state.Rollout("stripe", promoted, utcnow() if rolled_back else None, "auth" if rolled_back else None)


@pytest.mark.parametrize("changes, configured, state, live_expected, reason", [
    ({}, True, rollout(True), True, "live: policy dry_run is false"),
    ({"dry_run": True}, True, rollout(True), False, "policy: dry_run is true"),
    ({"dry_run": True, "adapters__stripe__dry_run": False}, True, rollout(True), True, "adapters.stripe.dry_run is false"),
    ({"adapters__stripe__dry_run": True}, True, rollout(True), False, "policy: adapters.stripe.dry_run is true"),
    ({"allow_payments": False}, True, rollout(True), False, "policy: allow_payments is false"),
    ({}, False, rollout(True), False, "secrets: stripe is not configured"),
    ({}, True, rollout(True, rolled_back=True), False, "rolled back"),
    ({"security__canary_percent": 0}, True, rollout(False), False, "canary: this run is outside"),
    ({"security__canary_percent": 0}, True, rollout(True), True, "promoted"),
])
def test_every_switch_ends_in_one_mode_with_its_reason(live, changes, configured, state, live_expected, reason):
    policy = parse_policy(json.dumps(live.policy(**changes)))
    ctx = CallContext("run-1", policy, Secrets(), rollouts={"stripe": state})
    mode = decide_mode("stripe", ctx, configured)
    assert mode.live is live_expected and reason in mode.reason


def test_canary_share_is_within_tolerance_over_1000_runs(live) -> None:
    policy = parse_policy(json.dumps(live.policy(security__canary_percent=10)))
    base = CallContext(None, policy, Secrets(), rollouts={"stripe": rollout(False)})
    ids = [str(uuid.UUID(int=i * 7919 + 13)) for i in range(1000)]
    live_count = sum(decide_mode("stripe", replace(base, run_id=i), True).live for i in ids)
    assert 70 <= live_count <= 130
    assert all(decide_mode("stripe", replace(base, run_id=i), True).live == (canary_bucket(i) < 10) for i in ids[:50])


def test_secrets_never_leak_into_logs_records_or_api(live, client, api_keys, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    live.servers["stripe"].state.secret_key = "sk_test_wrong"  # make errors happen too
    runs = [live.run("charge", {**CHARGE, "payment_method": "pm_1"}),
            live.run("send_email", {"to": "a@example.com", "subject": "s", "text": "t"}),
            live.run("ingest_forms", {"form_id": "FORM1"}),
            live.run("post_external", {"platform": "instagram", "content": "c", "media_url": "https://e.com/a.jpg"})]
    texts = [r.getMessage() for r in caplog.records] + [json.dumps(r.__dict__, default=str) for r in caplog.records]
    with live.runtime.db.read() as session:
        texts += [json.dumps(e.data) for e in session.scalars(select(Event))]
        texts += [json.dumps([a.request, a.response, a.reason]) for a in session.scalars(select(AuditRecord))]
    for run in runs:
        texts.append(json.dumps([run.result, run.error]))
        texts.append(client.get(f"/workflows/{run.id}", headers=api_keys.header("viewer")).get_data(as_text=True))
    blob = "\n".join(texts)
    assert runs[0].status == "failed" and runs[1].status == "succeeded"
    for secret in SECRET_VALUES:
        assert secret not in blob, secret


def test_an_echoed_basic_auth_header_is_redacted_everywhere(live, client, api_keys) -> None:
    """A provider that echoes its Authorization header put base64("api:" + key) into the error."""
    import base64

    live.servers["mailgun"].state.echo_authorization = True
    run = live.run("send_email", {"to": "a@example.com", "subject": "s", "text": "t"})
    assert run.status == "failed" and "Authorization" in json.dumps(run.error)
    encoded = base64.b64encode(f"api:{SECRETS['mailgun']['api_key']}".encode()).decode()
    core = encoded[4:-4]  # what depends on the key alone, whatever the padding
    with live.runtime.db.read() as session:
        texts = [json.dumps(e.data) for e in session.scalars(select(Event))]
        texts += [json.dumps([a.request, a.response, a.reason]) for a in session.scalars(select(AuditRecord))]
    texts += [json.dumps([run.result, run.error]),
              client.get(f"/workflows/{run.id}", headers=api_keys.header("viewer")).get_data(as_text=True),
              client.get("/events", headers=api_keys.header("viewer")).get_data(as_text=True),
              client.get("/federation/events", headers=api_keys.header("admin")).get_data(as_text=True)]
    blob = "\n".join(texts)
    assert "[REDACTED]" in blob and core not in blob and SECRETS["mailgun"]["api_key"] not in blob


@pytest.mark.parametrize("prefix", ["", "x", "xy"])  # each place the secret can start in a base64 group
def test_the_usual_encodings_of_a_secret_are_redacted(prefix: str) -> None:
    """URL-encoded (both ways), base64 of the secret alone and of ``user:secret`` (standard and
    URL-safe alphabets): each is redacted, whatever surrounds it."""
    import base64
    from urllib.parse import quote, quote_plus

    secret = "sk_live/ab+cd ef&gh=ij?~SECRET"
    secrets = Secrets({("stripe", "secret_key"): secret})
    for wire in (quote(secret, safe=""), quote_plus(secret), base64.b64encode((prefix + secret).encode()).decode(),
                 base64.urlsafe_b64encode((prefix + secret).encode()).decode(),
                 base64.b64encode(f"api:{prefix}{secret}".encode()).decode()):
        text = secrets.redact(f"error: bad header {wire} (retry)")
        assert "[REDACTED]" in text and wire not in text, wire
        core = wire[4:-4]
        assert core not in text


def test_secrets_file_mode_is_enforced_at_load(live, env) -> None:
    Path(env["AURORA_SECRETS_FILE"]).chmod(0o640)
    with pytest.raises(Exception, match="chmod 600"):
        load_secrets(Path(env["AURORA_SECRETS_FILE"]))


def test_beat_ingests_forms_only_when_allowed_and_not_twice(live) -> None:
    engine = live.runtime.engine
    live.set_policy(allow_typeform_auto_ingest=False, adapters__typeform__forms=["FORM1"])
    assert engine.schedule_form_ingests() == []
    live.set_policy(adapters__typeform__forms=["FORM1"])
    [run_id] = engine.schedule_form_ingests()
    assert engine.schedule_form_ingests() == []  # the first is still queued
    engine.execute(run_id)
    stored = live.get(run_id)
    assert stored.status == "succeeded" and stored.submitted_by == "beat"
    assert stored.result["response"]["new"] == 2500
    assert len(engine.schedule_form_ingests()) == 1


def test_rate_limits_are_shared_through_redis(env, redis_url) -> None:
    from aurora.config import load_settings
    from aurora.ratelimit import RateLimiter

    settings = load_settings({**env, "AURORA_BROKER_URL": redis_url})
    first, second = RateLimiter(settings), RateLimiter(settings)  # as two worker processes would
    adapter = f"shared-{uuid.uuid4().hex[:6]}"
    # Each process alone stays within the limit: only the count they share can make one wait.
    # (Five calls spread over both passed with sharing off too: each process waited on its own.)
    assert first.acquire(adapter, "2/second") < 0.2 and first.acquire(adapter, "2/second") < 0.2
    waited = second.acquire(adapter, "2/second")
    assert waited > 0.5, f"the second process waited {waited:.2f} s: it did not see the first one's calls"
    assert first.waited.get(adapter, 0) < 0.2 and second.waited[adapter] == waited


def test_a_charge_approved_as_simulated_never_goes_out_live(live) -> None:
    """Votes are bound to the rendered request and its mode: the policy turning Stripe live after
    the votes voids them, sends nothing, and the run waits for votes on the live charge."""
    from aurora import approvals, runs
    from aurora.keys import Caller
    from aurora.models import Role

    alice, bob = Caller("alice", Role.APPROVER), Caller("bob", Role.APPROVER)
    engine = live.runtime.engine
    live.set_policy(dry_run=True)
    run = engine.submit(documents.load(json.dumps({"name": "pay", "goal": "charge", "payload": CHARGE}), fmt="json"),
                        "sam")
    assert engine.execute(run.id).status == "awaiting_approval"
    with live.runtime.db.read() as session:
        assert runs.detail(session, run.id)["approval"]["mode"] == "simulated"
    approvals.vote(engine, run.id, alice, "approve", None, "api", current_hash(engine, run.id))
    assert approvals.vote(engine, run.id, bob, "approve", None, "api", current_hash(engine, run.id))["status"] == "queued"
    live.set_policy()  # now live, before the worker acts
    assert engine.execute(run.id).status == "awaiting_approval"
    # no charge; only a read of the customer's default payment method, for the live rendering
    assert [r.method for r in live.servers["stripe"].received] == ["GET"]
    with live.runtime.db.read() as session:
        shown = runs.detail(session, run.id)
    assert shown["approval"]["mode"] == "live" and shown["approvals"]["received"] == 0
    assert any(e["type"] == "approval.voided" and e["data"]["was_mode"] == "simulated" for e in shown["timeline"])
    approvals.vote(engine, run.id, alice, "approve", "live now", "api", current_hash(engine, run.id))
    approvals.vote(engine, run.id, bob, "approve", "live now", "api", current_hash(engine, run.id))
    assert engine.execute(run.id).status == "succeeded"
    assert live.get(run.id).result["mode"] == "live" and len(live.servers["stripe"].requests_to("/v1/payment_intents")) == 1


def _approve_all(live, run_id: str) -> str:
    """Two approvers vote on what they are shown now; the status after."""
    from aurora import approvals
    from aurora.keys import Caller
    from aurora.models import Role

    engine = live.runtime.engine
    result = {}
    for name in ("alice", "bob"):
        result = approvals.vote(engine, run_id, Caller(name, Role.APPROVER), "approve", None, "api",
                                current_hash(engine, run_id))
    return result["status"]


def test_a_stripe_key_swap_or_a_changed_default_payment_method_voids_the_votes(live, env) -> None:
    """The charge's binding covers the credential it will use (a fingerprint, never the key) and
    the payment method it resolves for a customer: either changing after the votes voids them."""
    from aurora import runs

    engine = live.runtime.engine
    stripe, secrets = live.servers["stripe"], Path(env["AURORA_SECRETS_FILE"])
    run = engine.submit(documents.load(json.dumps({"name": "pay", "goal": "charge", "payload": CHARGE}), fmt="json"),
                        "sam")
    assert engine.execute(run.id).status == "awaiting_approval"
    with live.runtime.db.read() as session:
        before = runs.detail(session, run.id)["approval"]
    assert before["facts"]["payment_method"] == "pm_card_visa" and before["facts"]["credential"].startswith("sk_test_")
    plain = {row["label"]: row["value"] for row in before["plain"]}
    assert plain["Payment method (the customer's default, as looked up)"] == "pm_card_visa"
    assert SECRETS["stripe"]["secret_key"] not in json.dumps(before)  # a fingerprint, not the key
    assert _approve_all(live, run.id) == "queued"

    # Another key, same shape: the one the votes approved is not the one that would charge.
    swapped = {**SECRETS, "stripe": {**SECRETS["stripe"], "secret_key": "sk_test_otherACCOUNT9999"}}
    secrets.write_text(json.dumps(swapped))
    stripe.state.secret_key = "sk_test_otherACCOUNT9999"
    assert engine.execute(run.id).status == "awaiting_approval"
    assert stripe.requests_to("/v1/payment_intents") == []
    with live.runtime.db.read() as session:
        after = runs.detail(session, run.id)
    assert after["approvals"]["received"] == 0 and after["approval"]["facts"]["credential"] != before["facts"]["credential"]
    voided = [e for e in after["timeline"] if e["type"] == "approval.voided"]
    assert voided and "facts" in voided[-1]["data"]["reason"]
    assert "sk_test_otherACCOUNT9999" not in json.dumps(after)

    # Approved again; then the customer's default card changes before the worker acts.
    assert _approve_all(live, run.id) == "queued"
    stripe.state.default_methods["cus_42"] = "pm_card_other"
    assert engine.execute(run.id).status == "awaiting_approval"
    assert stripe.requests_to("/v1/payment_intents") == []
    with live.runtime.db.read() as session:
        assert runs.detail(session, run.id)["approval"]["facts"]["payment_method"] == "pm_card_other"
    assert _approve_all(live, run.id) == "queued"
    assert engine.execute(run.id).status == "succeeded"
    [intent] = stripe.requests_to("/v1/payment_intents")
    assert intent.form()["payment_method"] == ["pm_card_other"]  # exactly the approved one


def test_a_mailgun_key_swap_voids_the_votes(live, env) -> None:
    engine = live.runtime.engine
    mail = {"to": "kunde@example.com", "subject": "Hi", "text": "Hallo", "require_approval": True}
    run = engine.submit(documents.load(json.dumps({"name": "m", "goal": "send_email", "payload": mail}), fmt="json"),
                        "sam")
    assert engine.execute(run.id).status == "awaiting_approval"
    first = current_hash(engine, run.id)
    swapped = {**SECRETS, "mailgun": {**SECRETS["mailgun"], "api_key": "key-otherACCOUNT1111"}}
    Path(env["AURORA_SECRETS_FILE"]).write_text(json.dumps(swapped))
    assert current_hash(engine, run.id) != first  # what approvers see follows the key in use


def test_a_charge_approved_with_an_unresolved_payment_method_charges_nobody(live) -> None:
    from aurora import runs

    engine = live.runtime.engine
    charge = {**CHARGE, "customer": "cus_nopm"}  # no default payment method at Stripe
    run = engine.submit(documents.load(json.dumps({"name": "pay", "goal": "charge", "payload": charge}), fmt="json"),
                        "sam")
    assert engine.execute(run.id).status == "awaiting_approval"
    with live.runtime.db.read() as session:
        shown = runs.detail(session, run.id)["approval"]
    assert shown["facts"]["payment_method"].startswith("unresolved: customer cus_nopm has no default")
    assert _approve_all(live, run.id) == "queued"
    assert engine.execute(run.id).status == "failed"
    assert "could not be looked up when the charge was approved" in live.get(run.id).error["message"]
    assert live.servers["stripe"].requests_to("/v1/payment_intents") == []


def test_the_mail_to_approvers_goes_out_live_only_while_its_run_waits(live) -> None:
    """The notification is the one live call that is not a run's act: its grant holds only while
    the run it announces waits for votes."""
    from dataclasses import replace

    from aurora import approvals
    from aurora.adapters.base import LiveCallRefused

    live.set_policy(approvals__notify=["chef@example.com"])
    engine = live.runtime.engine
    run = engine.submit(documents.load(json.dumps({"name": "pay", "goal": "charge", "payload": CHARGE}), fmt="json"),
                        "sam")
    assert engine.execute(run.id).status == "awaiting_approval"
    [mail] = live.servers["mailgun"].requests_to("/v3/")
    assert "chef@example.com" in mail.form()["to"]
    ctx = CallContext(run.id, live.runtime.policies.current(), live.runtime.secrets())
    engine.cancel(run.id, "sam")
    grant = approvals._Waiting(engine.db, run.id)  # noqa: SLF001
    with pytest.raises(LiveCallRefused, match="does not wait for votes"):
        MailgunAdapter().call({"to": "chef@example.com", "subject": "x", "text": "y"},
                              replace(ctx, run_id=f"{run.id}-notify", grant=grant))
    assert len(live.servers["mailgun"].requests_to("/v3/")) == 1

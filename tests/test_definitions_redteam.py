"""Red-team checks of stored definitions and their triggers: keys that must not collide between
definitions, schedules that must not fire what a disabled definition missed, long downtimes."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from standardwebhooks import Webhook

from aurora import definitions, triggers
from aurora.errors import DocumentError
from aurora.models import Definition, Event, Run

MONDAY_9 = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)  # 09:00 in Berlin


def weekly(name: str, text: str = "Schreibe", catchup: bool = False) -> str:
    return f"""name: {name}
on:
  schedule:
    - {{cron: "0 9 * * MON", timezone: Europe/Berlin, catchup: {str(catchup).lower()}}}
steps:
  - {{id: draft, goal: analyse, payload: {{text: "{text}"}}}}
"""


def hooked(name: str) -> str:
    return f"""name: {name}
on:
  webhook:
    inputs: {{customer_email: /customer/email}}
inputs:
  customer_email: {{type: string, format: email}}
steps:
  - {{id: mail, goal: send_email, payload: {{to: "{{{{ inputs.customer_email }}}}", subject: {name}, text: x}}}}
"""


def runs_of(runtime, name: str) -> list[Run]:
    with runtime.db.read() as session:
        return list(session.scalars(select(Run).where(Run.definition == name).order_by(Run.pk)))


def _checked_at(runtime, name: str, when: datetime) -> None:
    with runtime.db.write() as session:
        session.execute(update(Definition).where(Definition.name == name).values(
            created_at=when, schedule_checked_at=None))


def test_two_definitions_on_the_same_schedule_both_fire(runtime) -> None:
    # the firing's key was (version, trigger, time) without the definition: the second one was refused
    for name, text in (("post_a", "Erstens"), ("post_b", "Zweitens")):
        definitions.apply(runtime.db, weekly(name, text), "admin")
        _checked_at(runtime, name, MONDAY_9 - timedelta(days=1))
    started = triggers.fire_schedules(runtime.engine, now=MONDAY_9 + timedelta(seconds=5))
    assert len(started) == 2
    assert len(runs_of(runtime, "post_a")) == len(runs_of(runtime, "post_b")) == 1


def test_two_identical_definitions_on_the_same_schedule_each_get_their_own_run(runtime) -> None:
    # with the same document the collision did not even log: post_b was handed post_a's run
    for name in ("same_a", "same_b"):
        definitions.apply(runtime.db, weekly("same", "gleich").replace("name: same", f"name: {name}"), "admin")
        _checked_at(runtime, name, MONDAY_9 - timedelta(days=1))
    triggers.fire_schedules(runtime.engine, now=MONDAY_9 + timedelta(seconds=5))
    assert len(runs_of(runtime, "same_a")) == len(runs_of(runtime, "same_b")) == 1


def _signed(secret: str, body: dict, msg_id: str) -> tuple[bytes, dict]:
    raw = json.dumps(body)
    at = datetime.now(UTC)
    return raw.encode(), {"webhook-id": msg_id, "webhook-timestamp": str(int(at.timestamp())),
                          "webhook-signature": Webhook(secret).sign(msg_id, at, raw),
                          "Content-Type": "application/json"}


def test_the_same_webhook_id_at_two_definitions_starts_each_and_leaks_nothing(client, api_keys, runtime) -> None:
    # two senders numbering their messages alike (msg_1, msg_2 …) must not refuse each other, and
    # the holder of one definition's secret must not learn the other's run ids nor block its calls
    admin = api_keys.header("admin")
    secrets = {}
    for name in ("hook_a", "hook_b"):
        definitions.apply(runtime.db, hooked(name), "admin")
        secrets[name] = client.post(f"/definitions/{name}/secret", headers=admin).json["secret"]
    body, headers = _signed(secrets["hook_a"], {"customer": {"email": "a@example.com"}}, "msg_1")
    first = client.post("/hooks/hook_a", data=body, headers=headers)
    assert first.status_code == 201, first.json
    body, headers = _signed(secrets["hook_b"], {"customer": {"email": "b@example.com"}}, "msg_1")
    second = client.post("/hooks/hook_b", data=body, headers=headers)
    assert second.status_code == 201, second.json
    assert first.json["id"] not in json.dumps(second.json)
    assert len(runs_of(runtime, "hook_b")) == 1


def test_a_webhook_id_reused_with_another_body_is_a_replay_409(client, api_keys, runtime) -> None:
    # the sender re-signs the same webhook-id over another body: the docs promise 409 for an id seen before
    definitions.apply(runtime.db, hooked("hook_c"), "admin")
    secret = client.post("/definitions/hook_c/secret", headers=api_keys.header("admin")).json["secret"]
    body, headers = _signed(secret, {"customer": {"email": "a@example.com"}}, "msg_9")
    assert client.post("/hooks/hook_c", data=body, headers=headers).status_code == 201
    body, headers = _signed(secret, {"customer": {"email": "other@example.com"}}, "msg_9")
    again = client.post("/hooks/hook_c", data=body, headers=headers)
    assert again.status_code == 409, again.json
    assert len(runs_of(runtime, "hook_c")) == 1


def test_enabling_again_does_not_fire_what_was_missed_while_disabled(runtime) -> None:
    # "a disabled definition's triggers do nothing": enabling it days later must not start the
    # firing it missed while it was off (catchup is about downtime, not about being switched off)
    from aurora.models import utcnow

    definitions.apply(runtime.db, weekly("paused", catchup=True), "admin")
    _checked_at(runtime, "paused", utcnow() - timedelta(days=8))  # a Monday 09:00 passed since
    definitions.set_enabled(runtime.db, "paused", False, "admin")
    assert triggers.fire_schedules(runtime.engine) == []
    definitions.set_enabled(runtime.db, "paused", True, "admin")
    assert triggers.fire_schedules(runtime.engine) == []
    assert runs_of(runtime, "paused") == []


def test_a_minutely_schedule_after_a_long_downtime_catches_up_the_latest_firing(runtime) -> None:
    # _MAX_SCAN kept the OLDEST 20 000 firings: after a fortnight down, "the latest missed one"
    # was one from two weeks ago, and the firing due right now was never seen
    doc = weekly("minutely", catchup=True).replace("0 9 * * MON", "* * * * *")
    definitions.apply(runtime.db, doc, "admin")
    back = MONDAY_9 + timedelta(days=20, seconds=5)
    _checked_at(runtime, "minutely", MONDAY_9)
    started = triggers.fire_schedules(runtime.engine, now=back)
    with runtime.db.read() as session:
        fired = [e.data["scheduled_for"] for e in session.scalars(select(Event).where(
            Event.run_id.in_(started), Event.type == "run.triggered"))]
    assert max(fired) == (back - timedelta(seconds=5)).isoformat()  # the firing due right now
    assert min(fired) >= (back - triggers.GRACE).isoformat()  # and only those within the grace


def test_a_cron_with_a_seconds_field_is_refused(runtime) -> None:
    # cronsim takes a sixth field as seconds: "* * * * * *" would start 20 runs every tick
    with pytest.raises(DocumentError) as bad:
        definitions.apply(runtime.db, weekly("secondly").replace("0 9 * * MON", "* * * * * *"), "admin")
    assert bad.value.problems[0].path == "on.schedule[0].cron"


@pytest.fixture
def any_db(each_db):
    return each_db


@pytest.mark.parametrize("first", [True, False], ids=["new", "changed"])
def test_applies_racing_each_other_make_distinct_versions_and_no_error(any_db, first) -> None:
    # two admins (or a CI job run twice) applying at once: never a 500, never two rows of one version
    if not first:
        definitions.apply(any_db.db, weekly("raced", "v0"), "admin")
    threads, gate = 6, threading.Barrier(6)
    results: list[object] = []

    def apply(i: int) -> None:
        gate.wait()
        try:
            results.append(definitions.apply(any_db.db, weekly("raced", f"text {i}"), "admin"))
        except Exception as exc:  # noqa: BLE001 - what the race raises is the finding
            results.append(exc)

    workers = [threading.Thread(target=apply, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors
    versions = sorted(r.version for r in results)
    assert len(set(versions)) == threads
    assert [v["version"] for v in definitions.history(any_db.db, "raced")] == list(range(1, threads + 1 + (not first)))


SCHEDULED_MAIL = """name: weekly_mail
on:
  schedule:
    - {cron: "0 9 * * MON", timezone: Europe/Berlin%s}
inputs:
  customer_email: {type: string, format: email}
steps:
  - {id: mail, goal: send_email, payload: {to: "{{ inputs.customer_email }}", subject: Woche, text: x}}
"""


@pytest.mark.parametrize("inputs", ["", ", inputs: {customer_email: 5}", ", inputs: {nobody: x}"],
                         ids=["missing", "wrong_type", "undeclared"])
def test_a_schedule_whose_inputs_can_never_start_a_run_is_refused_when_applied(runtime, inputs) -> None:
    # accepted before, it then failed at every firing with only a log line: the post never came
    with pytest.raises(DocumentError) as bad:
        definitions.apply(runtime.db, SCHEDULED_MAIL % inputs, "admin")
    assert bad.value.problems[0].path.startswith("on.schedule[0].inputs"), bad.value.problems
    good = SCHEDULED_MAIL % ", inputs: {customer_email: team@example.com}"
    assert definitions.apply(runtime.db, good, "admin").version == 1


def test_a_schedule_with_inputs_on_a_single_task_is_refused(runtime) -> None:
    doc = ("name: one\non:\n  schedule:\n    - {cron: \"0 9 * * *\", inputs: {a: b}}\n"
           "goal: send_email\npayload: {to: a@example.com, subject: x, text: y}\n")
    with pytest.raises(DocumentError) as bad:
        definitions.apply(runtime.db, doc, "admin")
    assert bad.value.problems[0].path == "on.schedule[0].inputs"


def test_two_definitions_on_one_form_each_start_once_per_answer(runtime) -> None:
    # the key was (form, token) without the definition: the second definition on a form never started
    for name in ("welcome", "newsletter"):
        definitions.apply(runtime.db, f"""name: {name}
on:
  typeform: {{form_id: FORM1, inputs: {{customer_email: email}}}}
inputs:
  customer_email: {{type: string, format: email}}
steps:
  - {{id: mail, goal: send_email, payload: {{to: "{{{{ inputs.customer_email }}}}", subject: {name}, text: Hallo}}}}
""", "admin")
    answers = {"email": "neu@example.com"}
    assert len(triggers.start_by_form(runtime.engine, "FORM1", "resp_1", answers)) == 2
    assert triggers.start_by_form(runtime.engine, "FORM1", "resp_1", answers) == []  # the same answer again
    assert len(runs_of(runtime, "welcome")) == len(runs_of(runtime, "newsletter")) == 1


def test_a_firing_started_by_one_version_is_not_started_again_by_the_next(runtime) -> None:
    # a tick fired 09:00 for version 1 and died before noting it (or a second beat had read the old
    # schedule_checked_at); the admin applies a typo fix; the retried tick must not post twice
    definitions.apply(runtime.db, weekly("retried", "Tippfeler"), "admin")
    _checked_at(runtime, "retried", MONDAY_9 - timedelta(days=1))
    assert len(triggers.fire_schedules(runtime.engine, now=MONDAY_9 + timedelta(seconds=5))) == 1
    definitions.apply(runtime.db, weekly("retried", "Tippfehler"), "admin")
    with runtime.db.write() as session:  # the CAS that the dead tick never wrote
        session.execute(update(Definition).where(Definition.name == "retried").values(schedule_checked_at=None))
    assert triggers.fire_schedules(runtime.engine, now=MONDAY_9 + timedelta(seconds=25)) == []
    assert len(runs_of(runtime, "retried")) == 1


def test_one_broken_stored_schedule_does_not_stop_the_others_nor_the_listing(client, api_keys, runtime) -> None:
    # a stored version whose zone this host's tzdata no longer has (or any fault in one definition)
    # raised out of fire_schedules: every tick died there and no other definition fired again
    from aurora.models import DefinitionVersion

    for name in ("aaa_broken", "mmm_fine", "zzz_fine"):
        definitions.apply(runtime.db, weekly(name, name), "admin")
        _checked_at(runtime, name, MONDAY_9 - timedelta(days=1))
    with runtime.db.write() as session:
        row = session.scalar(select(DefinitionVersion).where(DefinitionVersion.name == "aaa_broken"))
        document = json.loads(json.dumps(row.document))
        document["on"]["schedule"][0]["timezone"] = "Europe/Nowhere"
        row.document = document
    started = triggers.fire_schedules(runtime.engine, now=MONDAY_9 + timedelta(seconds=5))
    assert len(started) == 2
    assert len(runs_of(runtime, "mmm_fine")) == len(runs_of(runtime, "zzz_fine")) == 1
    listed = client.get("/definitions", headers=api_keys.header("viewer"))
    assert listed.status_code == 200, listed.get_data(as_text=True)[:300]
    assert client.get("/definitions/aaa_broken", headers=api_keys.header("viewer")).status_code == 200


def test_a_lost_key_file_tells_a_webhook_caller_nothing_about_the_server(client, api_keys, runtime) -> None:
    # anyone on the internet could make /hooks/<name> answer 400 with the key file's path and the
    # admin's remedy; it is the operator's fault, told in the log, and a 503 the sender retries
    definitions.apply(runtime.db, hooked("lost"), "admin")
    client.post("/definitions/lost/secret", headers=api_keys.header("admin"))
    (runtime.settings.home / "definitions.key").unlink()
    at = str(int(datetime.now(UTC).timestamp()))
    answer = client.post("/hooks/lost", data=b"{}", headers={"webhook-id": "m", "webhook-timestamp": at,
                                                               "webhook-signature": "v1,AAAA"})
    assert answer.status_code == 503, answer.json
    assert str(runtime.settings.home) not in answer.get_data(as_text=True)
    assert not (runtime.settings.home / "definitions.key").exists()  # an anonymous call makes no key


@pytest.mark.parametrize("trigger", ["typeform: {form_id: F1, inputs: {email_adress: email}}",
                                     "webhook: {inputs: {email_adress: /customer/email}}"])
def test_a_trigger_mapping_to_an_undeclared_input_is_refused_when_applied(runtime, trigger) -> None:
    # a typo in the mapping made every answer/call fail (for a form: silently, in a log line)
    doc = (f"name: mapped\non:\n  {trigger}\ninputs:\n  customer_email: {{type: string, format: email}}\n"
           "steps:\n  - {id: mail, goal: send_email, payload: {to: \"{{ inputs.customer_email }}\", "
           "subject: x, text: y}}\n")
    with pytest.raises(DocumentError) as bad:
        definitions.apply(runtime.db, doc, "admin")
    assert "email_adress" in bad.value.problems[0].path, bad.value.problems


def test_a_tick_run_with_a_clock_far_ahead_does_not_silence_the_schedule_until_then(runtime) -> None:
    # one tick on a host whose clock was a year ahead (a bad RTC before NTP) set schedule_checked_at
    # a year on; "never backwards" then kept every firing of that year from being looked at
    definitions.apply(runtime.db, weekly("jumped"), "admin")
    with runtime.db.write() as session:
        session.execute(update(Definition).where(Definition.name == "jumped").values(
            schedule_checked_at=MONDAY_9 + timedelta(days=365)))
    assert len(triggers.fire_schedules(runtime.engine, now=MONDAY_9 + timedelta(seconds=5))) == 1
    assert triggers.fire_schedules(runtime.engine, now=MONDAY_9 + timedelta(seconds=25)) == []
    with runtime.db.read() as session:
        assert session.scalar(select(Definition.schedule_checked_at)) == MONDAY_9 + timedelta(seconds=25)


def test_only_admins_change_definitions(client, api_keys, runtime) -> None:
    definitions.apply(runtime.db, hooked("guarded"), "admin")
    for role in ("viewer", "submitter", "approver"):
        for action in ("disable", "enable", "secret"):
            answer = client.post(f"/definitions/guarded/{action}", headers=api_keys.header(role))
            assert answer.status_code == 403, (role, action, answer.status_code)
            assert "whsec_" not in answer.get_data(as_text=True)
        put = client.put("/definitions/guarded", data=hooked("guarded").replace("x}", "y}"),
                         headers={**api_keys.header(role), "Content-Type": "application/yaml"})
        assert put.status_code == 403
    assert client.post("/definitions/guarded/secret").status_code == 401
    shown = client.get("/definitions/guarded", headers=api_keys.header("viewer")).json
    assert shown["version"] == 1 and shown["enabled"] is True and shown["has_webhook_secret"] is False


def test_the_webhook_secret_is_in_no_log_audit_event_or_later_answer(client, api_keys, runtime, caplog) -> None:
    import logging

    from aurora.models import AuditRecord

    caplog.set_level(logging.DEBUG)
    definitions.apply(runtime.db, hooked("quiet"), "admin")
    secret = client.post("/definitions/quiet/secret", headers=api_keys.header("admin")).json["secret"]
    body, headers = _signed(secret, {"customer": {"email": "a@example.com"}}, "msg_q")
    assert client.post("/hooks/quiet", data=body, headers=headers).status_code == 201
    bad = {**headers, "webhook-signature": "v1,AAAA"}
    assert client.post("/hooks/quiet", data=body, headers=bad).status_code == 401
    key = secret.removeprefix("whsec_")[8:]  # past the first "/" or "+" too: a part of it is a leak
    seen = [caplog.text]
    with runtime.db.read() as session:
        seen += [json.dumps([a.reason, a.request, a.response], default=str)
                 for a in session.scalars(select(AuditRecord))]
        seen += [json.dumps(e.data, default=str) for e in session.scalars(select(Event))]
    for path in ("/definitions", "/definitions/quiet", "/definitions/quiet/history"):
        seen.append(client.get(path, headers=api_keys.header("admin")).get_data(as_text=True))
    assert not [text for text in seen if key in text]


def test_a_standard_webhooks_secret_is_redacted_whole_in_logs() -> None:
    # the log filter's whsec_ pattern knew Stripe's (letters and digits) but a Standard Webhooks
    # secret is base64: everything after its first "+" or "/" went to the log
    from aurora.logs import redact_text

    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw/+ab=="
    text = redact_text(f"rotated: {secret} (shown once)", [])
    assert "MfKQ9r8G" not in text and "+ab==" not in text and "Sw/" not in text, text

"""Stored definitions and their triggers: versions, runs with inputs, schedules in time zones
(daylight saving, two beats, downtime with and without catch-up), Standard Webhooks."""

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

WEEKLY = """name: autumn_post
on:
  schedule:
    - {cron: "0 9 * * MON", timezone: Europe/Berlin}
inputs:
  theme: {default: Herbst}
steps:
  - {id: draft, goal: analyse, payload: {text: "Schreibe über {{ inputs.theme }}"}}
"""

HOOKED = """name: invoice_mail
on:
  webhook:
    inputs: {customer_email: /customer/email}
inputs:
  customer_email: {type: string, format: email}
steps:
  - {id: mail, goal: send_email, payload: {to: "{{ inputs.customer_email }}", subject: Rechnung, text: Anbei.}}
"""


def runs_of(runtime, name: str) -> list[Run]:
    with runtime.db.read() as session:
        return list(session.scalars(select(Run).where(Run.definition == name).order_by(Run.pk)))


def test_apply_is_versioned_by_content(runtime) -> None:
    first = definitions.apply(runtime.db, WEEKLY, "admin")
    assert (first.version, first.changed) == (1, True)
    assert definitions.apply(runtime.db, WEEKLY + "\n# a comment changes nothing\n", "admin").changed is False
    second = definitions.apply(runtime.db, WEEKLY.replace("Herbst", "Winter"), "admin")
    assert (second.version, second.changed) == (2, True)
    assert [v["version"] for v in definitions.history(runtime.db, "autumn_post")] == [1, 2]
    assert definitions.show(runtime.db, "autumn_post", 1)["document"]["inputs"]["theme"]["default"] == "Herbst"
    assert definitions.show(runtime.db, "autumn_post")["version"] == 2
    with pytest.raises(DocumentError) as bad:
        definitions.apply(runtime.db, WEEKLY.replace("0 9 * * MON", "every monday"), "admin")
    assert bad.value.problems[0].path == "on.schedule[0].cron"
    with pytest.raises(DocumentError):
        definitions.apply(runtime.db, WEEKLY.replace("Europe/Berlin", "Mars/Olympus"), "admin")


def test_a_run_of_a_definition_records_where_it_came_from(runtime) -> None:
    definitions.apply(runtime.db, HOOKED, "admin")
    run, _ = definitions.start(runtime.engine, "invoice_mail", {"customer_email": "k@example.com"}, "sam", "sam")
    assert (run.definition, run.definition_version) == ("invoice_mail", 1)
    with pytest.raises(DocumentError, match="inputs.customer_email"):
        definitions.start(runtime.engine, "invoice_mail", {"customer_email": "no address"}, "sam", "sam")
    definitions.set_enabled(runtime.db, "invoice_mail", False, "admin")
    with pytest.raises(definitions.DefinitionDisabled):
        definitions.start(runtime.engine, "invoice_mail", {"customer_email": "k@example.com"}, "sam", "sam")


def test_cron_times_follow_the_time_zone_across_daylight_saving() -> None:
    # Berlin leaves summer time on 2026-10-25 (03:00 CEST -> 02:00 CET): 09:00 local moves in UTC
    times = triggers.firings("0 9 * * *", "Europe/Berlin", datetime(2026, 10, 23, 12, tzinfo=UTC),
                             datetime(2026, 10, 27, 12, tzinfo=UTC))
    assert [t.strftime("%m-%d %H:%M") for t in times] == ["10-24 07:00", "10-25 08:00", "10-26 08:00", "10-27 08:00"]
    # 02:30 does not exist on 2026-03-29 (02:00 -> 03:00) and must still fire once that day
    spring = triggers.firings("30 2 * * *", "Europe/Berlin", datetime(2026, 3, 28, 12, tzinfo=UTC),
                              datetime(2026, 3, 30, 12, tzinfo=UTC))
    assert len([t for t in spring if t.date() == datetime(2026, 3, 29).date()]) == 1
    # 02:30 exists twice on 2026-10-25: it fires once
    autumn = triggers.firings("30 2 * * *", "Europe/Berlin", datetime(2026, 10, 24, 12, tzinfo=UTC),
                              datetime(2026, 10, 25, 12, tzinfo=UTC))
    assert len(autumn) == 1
    monday = triggers.next_firing({"schedule": [{"cron": "0 9 * * MON", "timezone": "Europe/Berlin"}]},
                                  datetime(2026, 12, 1, tzinfo=UTC))
    assert monday == datetime(2026, 12, 7, 8, 0, tzinfo=UTC)


def _fire(runtime, at: datetime) -> list[str]:
    return triggers.fire_schedules(runtime.engine, now=at)


def _applied_at(runtime, name: str, when: datetime) -> None:
    with runtime.db.write() as session:
        session.execute(update(Definition).where(Definition.name == name).values(created_at=when,
                                                                                   schedule_checked_at=None))


MONDAY_9 = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)  # 09:00 in Berlin


def test_two_beats_firing_the_same_minute_start_one_run(runtime) -> None:
    definitions.apply(runtime.db, WEEKLY, "admin")
    _applied_at(runtime, "autumn_post", MONDAY_9 - timedelta(days=1))
    results: list[list[str]] = []
    beats = [threading.Thread(target=lambda: results.append(_fire(runtime, MONDAY_9 + timedelta(seconds=5))))
             for _ in range(2)]
    for beat in beats:
        beat.start()
    for beat in beats:
        beat.join()
    assert sum(len(r) for r in results) == 1
    assert _fire(runtime, MONDAY_9 + timedelta(seconds=25)) == []  # the next tick: nothing again
    [run] = runs_of(runtime, "autumn_post")
    with runtime.db.read() as session:
        fired = session.scalar(select(Event).where(Event.run_id == run.id, Event.type == "run.triggered"))
    assert fired.data["text"] == "started by schedule 2026-12-07 09:00 Europe/Berlin"


def test_downtime_across_a_firing_skips_it_or_catches_it_up_once(runtime) -> None:
    definitions.apply(runtime.db, WEEKLY, "admin")
    _applied_at(runtime, "autumn_post", MONDAY_9 - timedelta(days=1))
    back = MONDAY_9 + timedelta(days=8)  # down for two Mondays
    assert _fire(runtime, back) == []  # catchup false: missed firings are skipped
    definitions.apply(runtime.db, WEEKLY.replace("Europe/Berlin}", "Europe/Berlin, catchup: true}"), "admin")
    _applied_at(runtime, "autumn_post", MONDAY_9 - timedelta(days=1))
    started = _fire(runtime, back)
    assert len(started) == 1  # the latest missed one, once
    assert _fire(runtime, back + timedelta(minutes=1)) == []
    [run] = runs_of(runtime, "autumn_post")
    assert run.definition_version == 2


def test_a_disabled_definition_does_not_fire(runtime) -> None:
    definitions.apply(runtime.db, WEEKLY, "admin")
    _applied_at(runtime, "autumn_post", MONDAY_9 - timedelta(days=1))
    definitions.set_enabled(runtime.db, "autumn_post", False, "admin")
    assert _fire(runtime, MONDAY_9 + timedelta(seconds=5)) == []


def _signed(secret: str, body: dict, msg_id: str = "msg_1", at: datetime | None = None) -> tuple[bytes, dict]:
    raw = json.dumps(body)
    at = at or datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, at, raw)
    return raw.encode(), {"webhook-id": msg_id, "webhook-timestamp": str(int(at.timestamp())),
                          "webhook-signature": signature, "Content-Type": "application/json"}


def test_a_webhook_signed_with_standard_webhooks_starts_a_run_once(client, api_keys, runtime) -> None:
    definitions.apply(runtime.db, HOOKED, "admin")
    admin = api_keys.header("admin")
    secret = client.post("/definitions/invoice_mail/secret", headers=admin).json["secret"]
    assert secret.startswith("whsec_")
    with runtime.db.read() as session:
        assert secret not in session.scalar(select(Definition.webhook_secret))  # sealed at rest
    body, headers = _signed(secret, {"customer": {"email": "kunde@example.com"}})
    accepted = client.post("/hooks/invoice_mail", data=body, headers=headers)
    assert accepted.status_code == 201, accepted.json
    assert client.post("/hooks/invoice_mail", data=body, headers=headers).status_code == 409  # replayed
    tampered = body.replace(b"kunde", b"evil!")
    assert client.post("/hooks/invoice_mail", data=tampered, headers=headers).status_code == 401
    stale_body, stale = _signed(secret, {"customer": {"email": "k@example.com"}}, "msg_2",
                                datetime.now(UTC) - timedelta(minutes=10))
    assert client.post("/hooks/invoice_mail", data=stale_body, headers=stale).status_code == 401
    other_body, other = _signed(triggers.new_secret(), {"customer": {"email": "k@example.com"}}, "msg_3")
    assert client.post("/hooks/invoice_mail", data=other_body, headers=other).status_code == 401
    assert client.post("/hooks/nope", data=body, headers=headers).status_code == 404
    [run] = runs_of(runtime, "invoice_mail")
    assert run.inputs == {"customer_email": "kunde@example.com"}
    client.post("/definitions/invoice_mail/disable", headers=admin)
    fresh_body, fresh = _signed(secret, {"customer": {"email": "k@example.com"}}, "msg_4")
    assert client.post("/hooks/invoice_mail", data=fresh_body, headers=fresh).status_code == 409
    assert len(runs_of(runtime, "invoice_mail")) == 1


def test_the_definitions_api_and_its_roles(client, api_keys, runtime) -> None:
    yaml = {"Content-Type": "application/yaml"}
    assert client.put("/definitions/invoice_mail", data=HOOKED, headers={**yaml, **api_keys.header("submitter")}
                      ).status_code == 403
    created = client.put("/definitions/invoice_mail", data=HOOKED, headers={**yaml, **api_keys.header("admin")})
    assert created.status_code == 201 and created.json["version"] == 1
    again = client.put("/definitions/invoice_mail", data=HOOKED, headers={**yaml, **api_keys.header("admin")})
    assert again.status_code == 200 and again.json["changed"] is False
    wrong = client.put("/definitions/other", data=HOOKED, headers={**yaml, **api_keys.header("admin")})
    assert wrong.status_code == 422
    listed = client.get("/definitions", headers=api_keys.header("viewer")).json["definitions"]
    assert [d["name"] for d in listed] == ["invoice_mail"]
    run = client.post("/definitions/invoice_mail/runs", json={"inputs": {"customer_email": "k@example.com"}},
                      headers=api_keys.header("submitter"))
    assert run.status_code == 201, run.json
    bad = client.post("/definitions/invoice_mail/runs", json={"inputs": {"customer_email": 5}},
                      headers=api_keys.header("submitter"))
    assert bad.status_code == 422 and bad.json["errors"][0]["path"] == "inputs.customer_email"
    assert client.post("/definitions/invoice_mail/runs", json={}, headers=api_keys.header("viewer")).status_code == 403
    detail = client.get(f"/workflows/{run.json['id']}", headers=api_keys.header("viewer")).json
    assert any(e["type"] == "run.triggered" and e["data"]["by"] == "person" for e in detail["timeline"])


def test_the_shipped_definitions_apply(runtime) -> None:
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parent.parent / "definitions").glob("*.yaml")):
        assert definitions.apply(runtime.db, path.read_bytes(), "admin").version == 1

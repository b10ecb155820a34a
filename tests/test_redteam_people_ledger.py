"""Red-team findings on issues 15 and 20: each test failed on main before its fix."""

from __future__ import annotations

from conftest import shown
from test_engines_live import live, server  # noqa: F401 - fixtures
from test_people import bearer, waiting
from test_web_session import sign_in

from aurora import keys
from aurora.models import Role


def web_vote(client, run_id: str, request_hash: str, decision: str = "approve") -> str:
    page = client.get(f"/ui/runs/{run_id}").get_data(as_text=True)
    csrf = page.split('name="csrf_token" value="')[1].split('"')[0]
    answer = client.post(f"/ui/runs/{run_id}/{decision}", data={"csrf_token": csrf, "request_hash": request_hash},
                         follow_redirects=True)
    return answer.get_data(as_text=True)


def test_a_second_key_of_one_person_cannot_vote_again_on_the_web_page(client, app, runtime, api_keys) -> None:
    phone = keys.create(runtime.db, "alice-phone", Role.APPROVER, person="alice")
    run_id = waiting(client, runtime, api_keys.submitter)
    first = client.post(f"/workflows/{run_id}/approve", json={"request_hash": shown(runtime, run_id)},
                        headers=bearer(api_keys.approver))
    assert first.status_code == 200 and first.json["gate"]["received"] == 1
    browser = app.test_client()
    assert sign_in(browser, phone).status_code == 302
    web_vote(browser, run_id, shown(runtime, run_id))
    run = client.get(f"/workflows/{run_id}", headers=bearer(api_keys.admin)).json
    assert run["status"] == "awaiting_approval" and run["approvals"]["approvers"] == ["alice"]


def test_no_key_of_the_submitters_person_may_approve_on_the_web_page(client, app, runtime, api_keys) -> None:
    boss = keys.create(runtime.db, "boss", Role.ADMIN)
    laptop = keys.create(runtime.db, "boss-laptop", Role.ADMIN, person="boss")
    run_id = waiting(client, runtime, boss)
    browser = app.test_client()
    assert sign_in(browser, laptop).status_code == 302
    web_vote(browser, run_id, shown(runtime, run_id))
    run = client.get(f"/workflows/{run_id}", headers=bearer(api_keys.admin)).json
    assert run["approvals"]["received"] == 0 and run["approvals"]["votes"] == []


def _forge_vote(runtime, run_id: str, pk: int) -> None:
    from aurora.models import Approval, Run, utcnow

    with runtime.db.write() as session:
        run = session.get(Run, runtime_run_pk(runtime, run_id))
        session.add(Approval(pk=pk, run_id=run_id, voter="mallory", person="mallory", decision="approve",
                             comment=None, channel="api", document_hash=run.document_hash,
                             request_hash=run.approval_binding["hash"], created_at=utcnow()))


def runtime_run_pk(runtime, run_id: str) -> int:
    from sqlalchemy import select

    from aurora.models import Run

    with runtime.db.read() as session:
        return session.scalar(select(Run.pk).where(Run.id == run_id))


def test_a_vote_inserted_in_sql_below_the_first_chained_vote_is_detected(client, runtime, api_keys) -> None:
    from aurora import audit

    run_id = waiting(client, runtime, api_keys.submitter)
    assert client.post(f"/workflows/{run_id}/approve", json={"request_hash": shown(runtime, run_id)},
                       headers=bearer(api_keys.approver)).status_code == 200
    assert audit.verify_node(runtime.settings, runtime.db).intact
    _forge_vote(runtime, run_id, pk=-1)  # a pk no vote of the chain precedes: it was never checked
    verdict = audit.verify_node(runtime.settings, runtime.db)
    assert not verdict.intact and "not in the audit chain" in verdict.why, verdict


def test_a_vote_inserted_in_sql_before_any_chained_vote_is_detected(client, runtime, api_keys) -> None:
    from aurora import audit

    run_id = waiting(client, runtime, api_keys.submitter)
    assert audit.verify_node(runtime.settings, runtime.db).intact
    _forge_vote(runtime, run_id, pk=1)  # no vote in the chain yet: the approvals were not checked at all
    verdict = audit.verify_node(runtime.settings, runtime.db)
    assert not verdict.intact and "not in the audit chain" in verdict.why, verdict


SCHEDULED_CHARGE = """name: monthly_fee
on:
  schedule:
    - {cron: "0 9 1 * *", timezone: Europe/Berlin}
goal: charge
payload: {customer: cus_1, amount: "9.99", currency: EUR}
"""


def test_the_person_who_applied_a_scheduled_definition_may_not_approve_its_runs(client, runtime, api_keys) -> None:
    from aurora import definitions

    boss = keys.create(runtime.db, "boss", Role.ADMIN)
    laptop = keys.create(runtime.db, "boss-laptop", Role.ADMIN, person="boss")
    put = client.put("/definitions/monthly_fee", data=SCHEDULED_CHARGE.encode(),
                     headers={"Content-Type": "application/yaml", **bearer(boss)})
    assert put.status_code in (200, 201), put.json
    # what the beat does when the schedule fires
    run, _ = definitions.start(runtime.engine, "monthly_fee", None, "schedule", "schedule", trigger={"by": "schedule"})
    assert runtime.engine.execute(run.id).status == "awaiting_approval"
    own = client.post(f"/workflows/{run.id}/approve", json={"request_hash": shown(runtime, run.id)},
                      headers=bearer(laptop))
    assert own.status_code == 403 and own.json["error"] == "self_approval", own.json


def test_a_backup_with_tampered_scrypt_parameters_is_refused_not_a_crash(tmp_path) -> None:
    import json

    import pytest

    from aurora import backup
    from aurora.errors import BackupError

    secrets_file, key_file, out = tmp_path / "secrets.json", tmp_path / "audit.key", tmp_path / "backup.json"
    secrets_file.write_text('{"stripe": {"secret_key": "sk_test_x"}}')
    backup.make(secrets_file, key_file, "a long passphrase", out)
    body = json.loads(out.read_text())
    # huge costs: a panic in the KDF today, or hours and terabytes of memory with other values
    out.write_text(json.dumps({**body, "n": 2**40, "r": 2**20}))
    secrets_file.unlink()
    with pytest.raises(BackupError, match="scrypt"):
        backup.restore(out, "a long passphrase", secrets_file, key_file)
    assert not secrets_file.exists()


def test_forged_webhooks_with_non_ascii_signatures_are_refused_not_a_500(client, env, runtime) -> None:
    import json
    from pathlib import Path

    secrets = {"stripe": {"webhook_secret": "whsec_testSECRET1234567890"},
               "typeform": {"webhook_secret": "tf-hook-SECRET-abc"},
               "mailgun": {"webhook_signing_key": "mg-signing-SECRET-xyz"}}
    path = Path(env["AURORA_SECRETS_FILE"])
    path.write_text(json.dumps(secrets))
    path.chmod(0o600)
    body = json.dumps({"id": "evt_1", "type": "payment_intent.succeeded", "data": {"object": {"id": "pi_1"}}}).encode()
    forged = {
        "/webhooks/stripe": (body, {"Stripe-Signature": "t=1,v1=\u00e9".encode("latin-1")}),
        "/webhooks/typeform": (body, {"Typeform-Signature": "sha256=\u00e9".encode("latin-1")}),
        "/webhooks/mailgun": (json.dumps({"signature": {"timestamp": "1", "token": "t", "signature": "\u00e9"}}).encode(),
                              {}),
    }
    for url, (data, headers) in forged.items():
        answer = client.post(url, data=data, headers={"Content-Type": "application/json", **headers})
        assert answer.status_code == 401, (url, answer.status_code, answer.get_data(as_text=True)[:200])


def test_a_checkpoint_with_a_non_ascii_signature_is_refused_not_a_traceback(tmp_path) -> None:
    import json

    import pytest

    from aurora import audit

    line = json.dumps({"count": 1, "head_pk": 1, "head_hash": "0" * 64, "signature": "\u00e9"})
    (tmp_path / "cp").write_text(line + "\n")
    with pytest.raises(ValueError, match="line 1"):
        audit.read_checkpoints(tmp_path / "cp", b"k" * 32)


def test_an_engine_call_without_a_grant_or_with_a_lost_lease_reaches_no_engine(live, server) -> None:  # noqa: F811
    import pytest

    from aurora.adapters import BY_GOAL, CallContext
    from aurora.adapters.base import LiveCallRefused

    adapter = BY_GOAL["analyse"]
    payload = {"text": "Kundendaten: Max Mustermann, IBAN DE00", "engine": "perplexity"}

    class Lost:
        def refusal(self, _run_id):
            return "another worker holds the run's lease now"

    # a run id alone, as anybody can name one: the other adapters answer simulated
    named = CallContext("some-run-id", live.policies.current(), live.secrets())
    assert not adapter.call(payload, named).mode.live
    with pytest.raises(LiveCallRefused):
        adapter.call(payload, CallContext("some-run-id", live.policies.current(), live.secrets(), grant=Lost()))
    assert server.requests_to("/openai") == []

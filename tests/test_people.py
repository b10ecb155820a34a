"""People, not keys: quorum counts people, no key of the submitter's person approves, a revoked
key's votes stop counting, the last admin stays; votes are bound to the rendered request and
its mode (a policy switch after the votes voids them); ``GET /me``; what approvers see."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import seen
from sqlalchemy import select

from aurora import keys, people, runs
from aurora.gates import GateState, Vote, evaluate
from aurora.models import AuditRecord, Event, Role, utcnow

CHARGE = 'name: pay\ngoal: charge\npayload: {customer: cus_1, amount: "9.99", currency: EUR}\n'
MAIL = json.dumps({"name": "newsletter", "goal": "send_email", "payload": {
    "to": "kunde@example.com", "subject": "Harmloser Text", "text": "Harmloser Text",
    "html": "<p>Bitte zahlen Sie an IBAN DE00 0000</p>", "variables": {"rabatt": "90%"},
    "require_approval": True}})
JSON = {"Content-Type": "application/json"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def submit(client, key: str, body: str = CHARGE, content_type: str = "application/yaml") -> str:
    response = client.post("/workflows", data=body.encode(), headers={"Content-Type": content_type, **bearer(key)})
    assert response.status_code == 201, response.json
    return response.json["id"]


def waiting(client, runtime, key: str, body: str = CHARGE, content_type: str = "application/yaml") -> str:
    run_id = submit(client, key, body, content_type)
    assert runtime.engine.execute(run_id).status == "awaiting_approval"
    return run_id


def detail(runtime, run_id: str) -> dict:
    with runtime.db.read() as session:
        return runs.detail(session, run_id)


def timeline(runtime, run_id: str) -> list[Event]:
    with runtime.db.read() as session:
        return list(session.scalars(select(Event).where(Event.run_id == run_id).order_by(Event.seq)))


def reload_policy(runtime, env, change) -> None:
    policy = json.loads(open(env["AURORA_POLICY_FILE"]).read())
    change(policy)
    open(env["AURORA_POLICY_FILE"], "w").write(json.dumps(policy))
    runtime.policies._mtime, runtime.policies._checked_at = None, 0  # noqa: SLF001


def test_two_keys_of_one_person_are_not_a_quorum_of_two(client, runtime, api_keys) -> None:
    laptop = api_keys.approver  # the key "alice" of the person alice
    phone = keys.create(runtime.db, "alice-phone", Role.APPROVER, person="alice")
    bob = keys.create(runtime.db, "bob", Role.APPROVER)
    run_id = waiting(client, runtime, api_keys.submitter)
    first = client.post(f"/workflows/{run_id}/approve", json=seen(runtime, run_id), headers=bearer(laptop))
    assert first.status_code == 200 and first.json["gate"]["received"] == 1
    second = client.post(f"/workflows/{run_id}/approve", json=seen(runtime, run_id), headers=bearer(phone))
    assert second.status_code == 409 and second.json["error"] == "already_voted"
    assert [w["id"] for w in client.get("/approvals", headers=bearer(phone)).json["waiting"]] == []
    assert client.get(f"/workflows/{run_id}", headers=bearer(phone)).json["approvals"]["received"] == 1
    done = client.post(f"/workflows/{run_id}/approve", json=seen(runtime, run_id), headers=bearer(bob))
    assert done.json["status"] == "queued" and done.json["gate"]["approvers"] == ["alice", "bob"]


def test_the_gate_counts_people_not_keys() -> None:
    ledger = [Vote("alice", "approve", "h", "alice"), Vote("alice-phone", "approve", "h", "alice"),
              Vote("boss-laptop", "approve", "h", "boss"), Vote("bob", "approve", "h", "bob", void="key 'bob' was revoked"),
              Vote("carol", "approve", "old", "carol")]
    decision = evaluate(2, ledger, "h", submitter="boss")
    assert decision.state is GateState.WAITING and decision.approvers == ("alice",)
    assert evaluate(2, [*ledger, Vote("dave", "approve", "h", "dave")], "h", "boss").state is GateState.OPEN


def test_no_key_of_the_submitters_person_may_approve(client, runtime, api_keys) -> None:
    boss = keys.create(runtime.db, "boss", Role.ADMIN)
    laptop = keys.create(runtime.db, "boss-laptop", Role.ADMIN, person="boss")
    run_id = waiting(client, runtime, boss)
    own = client.post(f"/workflows/{run_id}/approve", json=seen(runtime, run_id), headers=bearer(laptop))
    assert own.status_code == 403 and own.json["error"] == "self_approval"
    assert client.get("/approvals", headers=bearer(laptop)).json["waiting"] == []
    run = client.get(f"/workflows/{run_id}", headers=bearer(laptop)).json
    assert (run["submitted_by"], run["submitted_by_person"]) == ("boss", "boss")
    # a submitter cannot hold an approver key beside: the role is the person's
    with pytest.raises(keys.Conflict, match="role 'submitter'"):
        keys.create(runtime.db, "sam-approver", Role.APPROVER, person="sam")


def test_a_revoked_keys_votes_stop_counting(client, runtime, api_keys) -> None:
    bob = keys.create(runtime.db, "bob", Role.APPROVER)
    carol = keys.create(runtime.db, "carol", Role.APPROVER)
    run_id = waiting(client, runtime, api_keys.submitter)
    client.post(f"/workflows/{run_id}/approve", json=seen(runtime, run_id), headers=bearer(api_keys.approver))
    assert client.post(f"/workflows/{run_id}/approve", json=seen(runtime, run_id), headers=bearer(bob)).json["status"] == "queued"
    assert people.revoke_key(runtime.db, "bob", "test-node") == [run_id]  # before the worker acts
    voided = [e for e in timeline(runtime, run_id) if e.type == "approval.voided"]
    assert [(e.data["voter"], e.data["reason"]) for e in voided] == [("bob", "key 'bob' was revoked")]
    assert runtime.engine.execute(run_id).status == "awaiting_approval"  # not charged on one vote
    run = detail(runtime, run_id)
    assert run["approvals"]["received"] == 1
    assert [(v["voter"], v["counts"], v["void"]) for v in run["approvals"]["votes"]] == [
        ("alice", True, None), ("bob", False, "key 'bob' was revoked")]
    assert client.post(f"/workflows/{run_id}/approve", json=seen(runtime, run_id), headers=bearer(bob)).status_code == 401
    assert client.post(f"/workflows/{run_id}/approve", json=seen(runtime, run_id), headers=bearer(carol)).json["status"] == "queued"
    assert runtime.engine.execute(run_id).status == "succeeded"


def test_removing_a_person_voids_their_votes_and_asks_again(client, runtime, api_keys, env) -> None:
    reload_policy(runtime, env, lambda p: p["approvals"].update(notify=["chef@example.com"]))
    keys.create(runtime.db, "alice-phone", Role.APPROVER, person="alice")
    run_id = waiting(client, runtime, api_keys.submitter)
    client.post(f"/workflows/{run_id}/approve", json=seen(runtime, run_id), headers=bearer(api_keys.approver))
    touched = people.remove_person(runtime.db, "alice", "test-node")
    people.ask_again(runtime.engine, touched)
    assert detail(runtime, run_id)["approvals"]["received"] == 0
    types = [e.type for e in timeline(runtime, run_id)]
    assert types.count("approval.notified") == 2 and "approval.voided" in types
    listed = {p["name"]: p for p in people.listing(runtime.db)}
    assert listed["alice"]["removed_at"] and all(k["revoked_at"] for k in listed["alice"]["keys"])
    assert [k["name"] for k in listed["alice"]["keys"]] == ["alice", "alice-phone"]


def test_the_last_admin_can_be_neither_revoked_nor_removed(env, tmp_path) -> None:
    cli_env = {**os.environ, **env}

    def aurora(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "aurora", *args], env=cli_env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)

    assert aurora("db", "upgrade").returncode == 0
    assert aurora("keys", "create", "root", "--role", "admin").returncode == 0
    assert aurora("keys", "create", "root-ci", "--role", "admin", "--person", "root").returncode == 0
    assert aurora("keys", "revoke", "root-ci").returncode == 0  # root still holds an admin key
    last = aurora("keys", "revoke", "root")
    assert last.returncode == 2 and "last admin" in last.stderr, last.stderr
    removed = aurora("people", "remove", "root")
    assert removed.returncode == 2 and "last admin" in removed.stderr
    assert aurora("keys", "create", "ada", "--role", "admin").returncode == 0
    listing = aurora("people", "list")
    assert "root" in listing.stdout and "root-ci" in listing.stdout and "ada" in listing.stdout
    assert aurora("people", "remove", "root").returncode == 0  # ada is an admin now
    assert json.loads(aurora("people", "list", "--json").stdout)[0]["removed_at"]


def test_me_says_who_the_caller_is(client, runtime, api_keys) -> None:
    phone = keys.create(runtime.db, "alice-phone", Role.APPROVER, person="alice")
    key_id = phone.split("_")[1]
    me = client.get("/me", headers=bearer(phone))
    assert me.status_code == 200
    assert me.json == {"person": "alice", "role": "approver", "key": {"id": key_id, "name": "alice-phone"}}
    assert client.get("/me").status_code == 401


def test_approvers_see_the_mails_hidden_html_part(client, runtime, api_keys) -> None:
    run_id = waiting(client, runtime, api_keys.submitter, MAIL, "application/json")
    [item] = client.get("/approvals", headers=bearer(api_keys.approver)).json["waiting"]
    approval = item["approval"]
    plain = {row["label"]: row["value"] for row in approval["plain"]}
    assert plain["HTML part"] == "<p>Bitte zahlen Sie an IBAN DE00 0000</p>"
    assert plain["Template variables"] == '{"rabatt": "90%"}' and plain["To"] == "kunde@example.com"
    assert approval["request"]["form"]["html"] == "<p>Bitte zahlen Sie an IBAN DE00 0000</p>"
    assert approval["request"]["auth"]["password"] == "[REDACTED]"
    assert (approval["mode"], approval["live"], approval["reason"]) == ("simulated", False, "policy: dry_run is true")
    assert item["mode"] == "simulated"
    shown = client.get(f"/workflows/{run_id}", headers=bearer(api_keys.viewer)).json["approval"]
    assert shown == approval
    stale = client.post(f"/workflows/{run_id}/approve", json={"request_hash": "0" * 64},
                        headers=bearer(api_keys.approver))
    assert stale.status_code == 409 and stale.json["error"] == "request_changed"
    ok = client.post(f"/workflows/{run_id}/approve", json={"request_hash": approval["hash"]},
                     headers=bearer(api_keys.approver))
    assert ok.json["status"] == "queued"


def test_a_policy_switch_after_the_votes_voids_them(client, runtime, api_keys, env) -> None:
    secrets = Path(env["AURORA_SECRETS_FILE"])  # there, but Stripe's key is not filled in
    secrets.write_text(json.dumps({"stripe": {"secret_key": "PLACEHOLDER"}}))
    secrets.chmod(0o600)
    bob = keys.create(runtime.db, "bob", Role.APPROVER)
    run_id = waiting(client, runtime, api_keys.submitter)
    before = detail(runtime, run_id)["approval"]
    assert before["reason"] == "policy: dry_run is true"
    client.post(f"/workflows/{run_id}/approve", json=seen(runtime, run_id), headers=bearer(api_keys.approver))
    assert client.post(f"/workflows/{run_id}/approve", json=seen(runtime, run_id), headers=bearer(bob)).json["status"] == "queued"

    def go_live(policy: dict) -> None:  # the operator turns payments live between votes and act
        policy["dry_run"] = False
        policy["allow_payments"] = True

    reload_policy(runtime, env, go_live)
    assert runtime.engine.execute(run_id).status == "awaiting_approval"
    voided = [e for e in timeline(runtime, run_id) if e.type == "approval.voided"]
    assert len(voided) == 1 and sorted(voided[0].data["people"]) == ["alice", "bob"]
    after = detail(runtime, run_id)
    assert after["approvals"]["received"] == 0 and after["approval"]["hash"] != before["hash"]
    assert after["approval"]["reason"] == "secrets: stripe is not configured (missing or PLACEHOLDER)"
    with runtime.db.read() as session:
        assert session.scalar(select(AuditRecord).where(AuditRecord.run_id == run_id,
                                                        AuditRecord.operation == "charge")) is None
    client.post(f"/workflows/{run_id}/approve", json=seen(runtime, run_id), headers=bearer(api_keys.approver))
    assert client.post(f"/workflows/{run_id}/approve", json=seen(runtime, run_id), headers=bearer(bob)).json["status"] == "queued"
    # Approved as SIMULATED for want of secrets while the policy means payments live: the charge
    # does not pass a simulation off as a charge (aurora.outcomes), it ends not_acted.
    assert runtime.engine.execute(run_id).status == "not_acted"
    assert "secrets" in detail(runtime, run_id)["error"]["what_to_do"]


def test_the_notification_mail_shows_the_request_and_its_mode(client, runtime, api_keys, env) -> None:
    reload_policy(runtime, env, lambda p: p["approvals"].update(notify=["chef@example.com"]))
    run_id = waiting(client, runtime, api_keys.submitter, MAIL, "application/json")
    with runtime.db.read() as session:
        record = session.scalar(select(AuditRecord).where(AuditRecord.run_id == run_id,
                                                          AuditRecord.operation == "notify_approvers"))
    text = record.request["form"]["text"]
    assert "It will be SIMULATED: policy: dry_run is true" in text
    assert "HTML part: <p>Bitte zahlen Sie an IBAN DE00 0000</p>" in text
    assert '"t:variables"' in text and "[REDACTED]" in text


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_0007_makes_each_key_a_person(request, tmp_path, backend) -> None:
    from sqlalchemy import create_engine, text

    from aurora.migrations import current, upgrade

    url = f"sqlite:///{tmp_path / 'old.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    upgrade(url, "0006")
    now = "2026-11-30 10:00:00.000000"
    with create_engine(url).begin() as db:
        db.execute(text("INSERT INTO api_keys (key_id, name, role, key_hash, created_at) VALUES "
                        "('k1', 'alice', 'approver', 'h1', :now), ('k2', 'boss', 'admin', 'h2', :now)"), {"now": now})
        db.execute(text("INSERT INTO runs (id, name, goal, document, document_hash, status, approvals_required, "
                        "submitted_by, attempts, created_at, updated_at) VALUES ('r1', 'pay', 'charge', '{}', 'd', "
                        "'awaiting_approval', 2, 'boss', 0, :now, :now)"), {"now": now})
        db.execute(text("INSERT INTO approvals (run_id, voter, decision, channel, document_hash, created_at) "
                        "VALUES ('r1', 'alice', 'approve', 'api', 'd', :now)"), {"now": now})
    upgrade(url, "0007")
    assert current(url) == "0007"
    with create_engine(url).connect() as db:
        assert sorted(db.execute(text("SELECT name, role FROM people")).all()) == [
            ("alice", "approver"), ("boss", "admin")]
        assert db.execute(text("SELECT person FROM api_keys WHERE name = 'alice'")).scalar() == "alice"
        assert db.execute(text("SELECT status, submitted_by_person FROM runs")).one() == ("queued", "boss")
        assert db.execute(text("SELECT person, request_hash FROM approvals")).one() == ("alice", None)


def test_the_binding_changes_with_a_promotion_a_rollback_and_the_sender_domain() -> None:
    from dataclasses import replace

    from conftest import ROOT

    from aurora.adapter_state import Rollout
    from aurora.adapters import CallContext
    from aurora.adapters.base import canary_bucket
    from aurora.adapters.mailgun_adapter import MailgunAdapter
    from aurora.binding import bind
    from aurora.policy import parse_policy
    from aurora.secrets import Secrets

    data = json.loads((ROOT / "policy" / "batch8_policy.json").read_text())
    data["dry_run"] = False
    policy = parse_policy(json.dumps(data))
    run_id = next(f"run-{i}" for i in range(1000) if canary_bucket(f"run-{i}") >= policy.canary_percent)
    secrets = Secrets({("mailgun", "api_key"): "key-1", ("mailgun", "domain"): "mg.example.com"})
    adapter, payload = MailgunAdapter(), {"to": "a@example.com", "subject": "s", "html": "<p>x</p>"}
    ctx = CallContext(run_id, policy, secrets, rollouts={"mailgun": Rollout("mailgun")})

    def bound(context: CallContext) -> dict:
        return bind(adapter, payload, context, adapter.decide(payload, context))

    canary = bound(ctx)
    promoted = bound(replace(ctx, rollouts={"mailgun": Rollout("mailgun", promoted=True)}))
    rolled_back = bound(replace(ctx, rollouts={"mailgun": Rollout("mailgun", True, utcnow(), "auth")}))
    other_domain = bound(replace(ctx, secrets=Secrets({**secrets.values, ("mailgun", "domain"): "mg.evil.example"})))
    assert (canary["mode"], promoted["mode"], rolled_back["mode"]) == ("simulated", "live", "simulated")
    assert len({canary["hash"], promoted["hash"], rolled_back["hash"], other_domain["hash"]}) == 4
    assert bound(ctx)["hash"] == canary["hash"]  # the same rendering, the same hash
    assert "key-1" not in json.dumps(promoted)


def test_the_last_admin_guard_on_postgresql(env, postgres_url) -> None:
    from aurora.config import load_settings
    from aurora.migrations import upgrade
    from aurora.runtime import Runtime

    rt = Runtime(load_settings({**env, "AURORA_DATABASE_URL": postgres_url}))
    upgrade(postgres_url)
    keys.create(rt.db, "root", Role.ADMIN)
    keys.create(rt.db, "root-ci", Role.ADMIN, person="root")
    people.revoke_key(rt.db, "root-ci", "test-node")
    with pytest.raises(people.LastAdmin, match="last admin"):
        people.revoke_key(rt.db, "root", "test-node")
    with pytest.raises(people.LastAdmin):
        people.remove_person(rt.db, "root", "test-node")
    assert keys.any_admin(rt.db)


def test_spellings_of_one_name_are_one_person(runtime) -> None:
    from aurora.errors import InvalidName

    keys.create(runtime.db, "alice-laptop", Role.APPROVER, person="alice")
    keys.create(runtime.db, "alice-phone", Role.APPROVER, person="Alice ")  # the same person, not a second
    held = {p["name"]: p for p in people.listing(runtime.db)}
    assert "alice" in held and "Alice " not in held and "Alice" not in held
    for bad in ("   ", "al ice", "ali\tce", "ålice"):
        with pytest.raises(InvalidName):
            keys.create(runtime.db, f"key-{abs(hash(bad))}", Role.APPROVER, person=bad)


# -- what approvers see is what would be sent now; a vote names it --------------------------------

def _mailgun_secrets(env) -> None:
    secrets = Path(env["AURORA_SECRETS_FILE"])
    secrets.write_text(json.dumps({"mailgun": {"api_key": "key-notSentAnywhere1", "domain": "mg.example.com"}}))
    secrets.chmod(0o600)


def _sign_in(client, key: str) -> None:
    token = client.get("/ui/login").get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
    assert client.post("/ui/login", data={"key": key, "csrf_token": token}).status_code in (302, 303)


def _csrf(page: str) -> str:
    return page.split('name="csrf_token" value="')[1].split('"')[0]


def test_what_approvers_see_follows_a_policy_change_while_the_run_waits(client, runtime, api_keys, env) -> None:
    _mailgun_secrets(env)
    run_id = waiting(client, runtime, api_keys.submitter, MAIL, "application/json")
    before = client.get(f"/workflows/{run_id}", headers=bearer(api_keys.viewer)).json["approval"]
    assert before["mode"] == "simulated"

    def go_live(policy: dict) -> None:  # mail goes live for every run, while this one waits
        policy["dry_run"] = False
        policy["security"]["canary_percent"] = 100

    reload_policy(runtime, env, go_live)
    shown_now = client.get(f"/workflows/{run_id}", headers=bearer(api_keys.viewer)).json["approval"]
    assert shown_now["mode"] == "live" and shown_now["live"] is True and shown_now["hash"] != before["hash"]
    [listed] = client.get("/approvals", headers=bearer(api_keys.approver)).json["waiting"]
    assert listed["approval"]["hash"] == shown_now["hash"] and listed["mode"] == "live"
    _sign_in(client, api_keys.approver)
    page = client.get(f"/ui/runs/{run_id}").get_data(as_text=True)
    assert ">LIVE<" in page and f'name="request_hash" value="{shown_now["hash"]}"' in page
    # a vote for what the approver saw before the change is refused, and says to look again
    stale = client.post(f"/workflows/{run_id}/approve", json={"request_hash": before["hash"]},
                        headers=bearer(api_keys.approver))
    assert stale.status_code == 409 and stale.json["error"] == "request_changed" and "look at it again" in stale.json["message"]
    ok = client.post(f"/workflows/{run_id}/approve", json={"request_hash": shown_now["hash"]},
                     headers=bearer(api_keys.approver))
    assert ok.status_code == 200 and ok.json["status"] == "queued"
    [vote] = detail(runtime, run_id)["approvals"]["votes"]
    assert vote["request_hash"] == shown_now["hash"] and vote["counts"] is True


def test_a_vote_must_name_the_request_hash_it_saw(client, runtime, api_keys, env) -> None:
    run_id = waiting(client, runtime, api_keys.submitter, MAIL, "application/json")
    for body in (None, {"comment": "passt"}, {"request_hash": ""}):
        missing = client.post(f"/workflows/{run_id}/approve", json=body, headers=bearer(api_keys.approver))
        assert missing.status_code == 400, missing.json
        assert missing.json["error"] == "request_hash_required" and "request_hash" in missing.json["message"]
    assert detail(runtime, run_id)["approvals"]["votes"] == []
    # the page's form carries the hash it showed; a form without it records nothing
    _sign_in(client, api_keys.approver)
    page = client.get(f"/ui/runs/{run_id}").get_data(as_text=True)
    bare = client.post(f"/ui/runs/{run_id}/approve", data={"csrf_token": _csrf(page)}, follow_redirects=True)
    assert "request_hash" in bare.get_data(as_text=True) and detail(runtime, run_id)["approvals"]["votes"] == []
    hashed = page.split('name="request_hash" value="')[1].split('"')[0]
    assert hashed == detail(runtime, run_id)["approval"]["hash"]
    client.post(f"/ui/runs/{run_id}/approve", data={"csrf_token": _csrf(page), "request_hash": hashed})
    [vote] = detail(runtime, run_id)["approvals"]["votes"]
    assert (vote["channel"], vote["request_hash"]) == ("web", hashed)


def test_aurora_approve_sends_the_request_hash(app, runtime, api_keys, tmp_path) -> None:
    import threading

    from click.testing import CliRunner
    from conftest import free_port
    from werkzeug.serving import make_server

    from aurora.cli import main

    bob = keys.create(runtime.db, "bob", Role.APPROVER)
    carol = keys.create(runtime.db, "carol", Role.APPROVER)
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        run_id = waiting(app.test_client(), runtime, api_keys.submitter)

        def aurora(key: str, *args: str, answer: str | None = None):
            env = {"AURORA_URL": f"http://127.0.0.1:{port}", "AURORA_TOKEN": key,
                   "AURORA_CLI_CONFIG": str(tmp_path / "cli.json")}
            return CliRunner().invoke(main, list(args), env=env, input=answer)

        listed = aurora(api_keys.approver, "approvals")
        command = next(line.strip() for line in listed.output.splitlines() if "aurora approve" in line)
        stale = aurora(api_keys.approver, "approve", run_id, "--request", "0" * 64)
        assert stale.exit_code == 2 and "look at it again" in stale.output
        first = aurora(api_keys.approver, *command.split(": ", 1)[1].split()[1:])
        assert first.exit_code == 0 and "1 of 2 approvals" in first.output, first.output
        declined = aurora(bob, "approve", run_id, answer="n\n")  # shown the request, and asked
        assert declined.exit_code == 1 and "Amount: 9.99 EUR" in declined.output
        assert detail(runtime, run_id)["approvals"]["received"] == 1
        second = aurora(carol, "approve", run_id, answer="y\n")
        assert second.exit_code == 0 and "queued" in second.output, second.output
        votes = detail(runtime, run_id)["approvals"]["votes"]
        assert [(v["voter"], v["channel"], v["counts"]) for v in votes] == [("alice", "cli", True), ("carol", "cli", True)]
    finally:
        server.shutdown()


def _pg_runtime(env, postgres_url):
    from aurora.config import load_settings
    from aurora.migrations import upgrade
    from aurora.runtime import Runtime

    rt = Runtime(load_settings({**env, "AURORA_DATABASE_URL": postgres_url}))
    upgrade(postgres_url)
    return rt


def _approved_charge(rt) -> str:
    from conftest import shown

    from aurora import approvals, documents
    from aurora.keys import Caller

    engine = rt.engine
    for name in ("alice", "bob"):
        keys.create(rt.db, name, Role.APPROVER)
    run = engine.submit(documents.load(CHARGE), "sam")
    assert engine.execute(run.id).status == "awaiting_approval"
    for name in ("alice", "bob"):
        result = approvals.vote(engine, run.id, Caller(name, Role.APPROVER), "approve", None, "api",
                                shown(engine, run.id))
    assert result["status"] == "queued"
    return run.id


def test_a_revocation_racing_the_gate_on_postgresql_never_lets_the_revoked_vote_count(env, postgres_url) -> None:
    """Connection A revokes bob's key (the UPDATE revoke_key makes) and has not committed when the
    worker's gate reads the votes: the gate waits for it, then sees it (READ COMMITTED alone would
    read the old row and act on a vote that was being revoked)."""
    import threading

    import psycopg

    rt = _pg_runtime(env, postgres_url)
    run_id = _approved_charge(rt)
    outcome: dict[str, str] = {}
    with psycopg.connect(postgres_url) as revoker:
        revoker.execute("UPDATE api_keys SET revoked_at = now() WHERE name = 'bob'")
        worker = threading.Thread(target=lambda: outcome.update(status=rt.engine.execute(run_id).status))
        worker.start()
        worker.join(2.0)
        assert worker.is_alive(), f"the gate did not wait for the revocation: {outcome}"
        revoker.commit()
    worker.join(30)
    assert outcome == {"status": "awaiting_approval"}  # one vote left of two: nothing charged
    assert detail(rt, run_id)["approvals"]["received"] == 1
    with rt.db.read() as session:
        assert session.scalar(select(AuditRecord).where(AuditRecord.run_id == run_id,
                                                        AuditRecord.operation == "charge")) is None


def test_a_revocation_waits_for_a_gate_that_is_beginning_the_act_on_postgresql(env, postgres_url) -> None:
    """The other order: while a gate holds the voters' keys (FOR SHARE, as ledger.votes(lock=True)
    reads them), revoke_key waits; afterwards the act has begun, and the revocation voids nothing
    in retrospect (the run is no longer one that has not acted)."""
    import threading

    import psycopg

    rt = _pg_runtime(env, postgres_url)
    run_id = _approved_charge(rt)
    touched: list[list[str]] = []
    with psycopg.connect(postgres_url) as gate:
        gate.execute("SELECT pk FROM api_keys WHERE name IN ('alice', 'bob') ORDER BY pk FOR SHARE")
        revoking = threading.Thread(target=lambda: touched.append(people.revoke_key(rt.db, "bob", "test-node")))
        revoking.start()
        revoking.join(1.5)
        assert revoking.is_alive(), "the revocation did not wait for the gate's lock"
        gate.commit()
    revoking.join(30)
    assert touched == [[run_id]]  # still queued here, so its vote is voided: the worker then waits
    assert rt.engine.execute(run_id).status == "awaiting_approval"

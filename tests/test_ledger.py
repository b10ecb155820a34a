"""The keyed audit chain: edits, recomputed chains, deletions, truncation after a checkpoint,
votes edited in SQL, key, rollout and federation changes in the chain, and the key file itself."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT, shown
from sqlalchemy import delete, select, update

from aurora import adapter_state, approvals, audit, documents, keys
from aurora.federation import registry, tokens
from aurora.keys import Caller
from aurora.models import Approval, AuditRecord, Role

MAIL = (ROOT / "workflows" / "send_report.yaml").read_bytes()
CHARGE = 'name: pay\ngoal: charge\npayload: {customer: cus_1, amount: "9.99", currency: EUR}\n'


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aurora", *args], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=60)


def runs(runtime, n: int = 4) -> None:
    for _ in range(n):
        runtime.engine.execute(runtime.engine.submit(documents.load(MAIL), "sam").id)


def records(runtime) -> list[AuditRecord]:
    with runtime.db.read() as session:
        return list(session.scalars(select(AuditRecord).order_by(AuditRecord.pk)))


def test_the_key_lives_outside_the_database_mode_0600(env, runtime) -> None:
    runs(runtime, 1)
    key_file = Path(env["AURORA_HOME"]) / "audit.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key_file.chmod(0o644)
    done = cli(env, "audit", "verify")
    assert done.returncode == 2 and "chmod 600" in done.stderr
    key_file.chmod(0o600)
    assert cli(env, "audit", "verify").returncode == 0


def test_a_chain_recomputed_without_the_key_is_detected(env, runtime) -> None:
    """The attack that passed before: change the amount, recompute every hash with plain SHA-256."""
    runs(runtime, 3)
    assert cli(env, "audit", "verify").returncode == 0
    with runtime.db.write() as session:
        prev = audit.GENESIS
        for record in session.scalars(select(AuditRecord).order_by(AuditRecord.pk)):
            if record.pk == 2:
                record.request = {**record.request, "subject": "rewritten"}
            record.prev_hash = prev
            record.hash = hashlib.sha256((prev + audit._canonical(record)).encode()).hexdigest()
            prev = record.hash
    done = cli(env, "audit", "verify")
    assert done.returncode == 1 and "record 1" in done.stderr and "audit key" in done.stderr
    # ... and so with a key of the attacker's own
    with runtime.db.write() as session:
        prev = audit.GENESIS
        for record in session.scalars(select(AuditRecord).order_by(AuditRecord.pk)):
            record.prev_hash, record.hash = prev, audit.record_hash(prev, record, b"m" * 32)
            prev = record.hash
    assert cli(env, "audit", "verify").returncode == 1


def test_deleting_the_newest_records_after_a_checkpoint_is_detected(env, runtime, tmp_path) -> None:
    runs(runtime, 4)
    made = cli(env, "audit", "checkpoint", "-o", str(tmp_path / "elsewhere.jsonl"))
    assert made.returncode == 0, made.stderr
    checkpoint = json.loads(made.stdout)
    assert checkpoint["count"] == 4 and checkpoint["head_hash"] == records(runtime)[-1].hash
    runs(runtime, 1)  # records after a checkpoint are fine
    assert cli(env, "audit", "verify").returncode == 0
    with runtime.db.write() as session:
        session.execute(delete(AuditRecord).where(AuditRecord.pk >= 4))
    done = cli(env, "audit", "verify")
    assert done.returncode == 1 and "cut short" in done.stderr and "record 4" in done.stderr, done.stderr
    # the copy kept elsewhere catches it even when the local file is gone
    (Path(env["AURORA_HOME"]) / "audit_checkpoints.jsonl").unlink()
    assert cli(env, "audit", "verify").returncode == 0  # nothing left to compare with...
    done = cli(env, "audit", "verify", "--checkpoint", str(tmp_path / "elsewhere.jsonl"))
    assert done.returncode == 1 and "cut short" in done.stderr


def test_a_forged_or_edited_checkpoint_is_refused(env, runtime, tmp_path) -> None:
    runs(runtime, 2)
    checkpoint = json.loads(cli(env, "audit", "checkpoint").stdout)
    forged = tmp_path / "forged.jsonl"
    forged.write_text(json.dumps({**checkpoint, "count": 1}) + "\n")
    done = cli(env, "audit", "verify", "--checkpoint", str(forged))
    assert done.returncode == 1 and "signature" in done.stderr


def test_votes_key_changes_and_rollouts_are_in_the_chain(env, runtime) -> None:
    engine = runtime.engine
    run = engine.submit(documents.load(CHARGE), "sam")
    assert engine.execute(run.id).status == "awaiting_approval"
    approvals.vote(engine, run.id, Caller("alice", Role.APPROVER), "approve", "ok", "api", shown(engine, run.id))
    keys.create(runtime.db, "bob", Role.APPROVER)
    keys.revoke(runtime.db, "bob")
    adapter_state.promote(runtime.db, "stripe", "test-node")
    adapter_state.enable(runtime.db, "stripe", "test-node")
    token = tokens.create(runtime.db, "node-b")
    tokens.revoke(runtime.db, tokens.listing(runtime.db)[0]["id"])
    registry.register(runtime.db, "http://b.example:9292", "node-b", "aurfed_" + "x" * 20,
                      public_key=runtime.identity.public_key, secret_path=runtime.settings.federation_secret_path)
    registry.remove(runtime.db, "node-b")
    ledger = [(r.adapter, r.operation) for r in records(runtime) if r.mode == audit.LEDGER_MODE]
    assert ledger == [("approvals", "vote"), ("keys", "create"), ("keys", "revoke"),
                      ("stripe", "promote"), ("stripe", "enable"),
                      ("federation", "token_create"), ("federation", "token_revoke"),
                      ("federation", "node_register"), ("federation", "node_remove")]
    assert token not in json.dumps([r.request for r in records(runtime)])
    assert cli(env, "audit", "verify").returncode == 0
    with runtime.db.write() as session:  # the edit that passed before
        session.execute(update(Approval).values(voter="mallory"))
    done = cli(env, "audit", "verify")
    assert done.returncode == 1 and "voter" in done.stderr, done.stderr
    with runtime.db.write() as session:
        session.execute(delete(Approval))
    done = cli(env, "audit", "verify")
    assert done.returncode == 1 and "deleted from the approvals table" in done.stderr


def unkeyed(runtime, upto: int | None = None) -> None:
    """Turn the first records into what a version before the keyed chain wrote."""
    with runtime.db.write() as session:
        prev = audit.GENESIS
        for record in session.scalars(select(AuditRecord).order_by(AuditRecord.pk)):
            if upto is not None and record.pk > upto:
                record.prev_hash, record.hash = prev, audit.record_hash(prev, record, runtime.db.audit_key())
            else:
                record.prev_hash = prev
                record.hash = hashlib.sha256((prev + audit._canonical(record)).encode()).hexdigest()
            prev = record.hash


def test_a_log_from_before_the_keyed_chain_is_resealed_once(env, runtime) -> None:
    runs(runtime, 3)
    unkeyed(runtime, upto=2)  # two old records, then one appended after the upgrade
    done = cli(env, "audit", "verify")
    assert done.returncode == 1 and "before the chain was keyed" in done.stderr
    sealed = cli(env, "audit", "reseal")
    assert sealed.returncode == 0 and "3 records" in sealed.stdout, sealed.stderr
    assert cli(env, "audit", "verify").returncode == 0


def test_reseal_refuses_a_broken_old_chain(env, runtime) -> None:
    runs(runtime, 2)
    unkeyed(runtime)
    with runtime.db.write() as session:
        session.execute(update(AuditRecord).where(AuditRecord.pk == 1).values(reason="edited"))
    done = cli(env, "audit", "reseal")
    assert done.returncode == 1 and "record 1" in done.stderr
    assert cli(env, "audit", "verify").returncode == 1


def test_beat_keeps_checkpoints_so_a_cut_is_caught_without_anyone_remembering(env, runtime) -> None:
    from aurora import tasks
    from aurora.celery_app import make_celery

    schedule = make_celery(runtime.settings).conf.beat_schedule["aurora-audit-checkpoint"]
    assert schedule["task"] == "aurora.audit_checkpoint" and schedule["schedule"] == 3600
    runs(runtime, 2)
    assert tasks.audit_checkpoint() == 2
    runs(runtime, 2)
    assert tasks.audit_checkpoint() == 4  # only the two new records were walked
    with runtime.db.write() as session:
        session.execute(delete(AuditRecord).where(AuditRecord.pk == 4))
    done = cli(env, "audit", "verify")
    assert done.returncode == 1 and "cut short" in done.stderr
    assert tasks.audit_checkpoint() == -1  # never a signature over a shortened chain
    lines = (Path(env["AURORA_HOME"]) / "audit_checkpoints.jsonl").read_text().splitlines()
    assert [json.loads(line)["count"] for line in lines] == [2, 4]


def test_a_policy_reload_is_one_audit_record_per_version_however_many_processes_see_it(env, runtime,
                                                                                         monkeypatch) -> None:
    from aurora import policy as policy_mod
    from aurora.config import load_settings
    from aurora.runtime import Runtime

    monkeypatch.setattr(policy_mod, "RELOAD_CHECK_INTERVAL", 0.0)
    other = Runtime(load_settings(env))  # a second process of the same node (a worker beside the web)
    assert runtime.policies.current().dry_run is True and other.policies.current().dry_run is True
    path = Path(env["AURORA_POLICY_FILE"])
    data = json.loads(path.read_text())
    data["security"]["require_quorum_for_critical"] = 3
    data["adapters"].setdefault("stripe", {})["dry_run"] = False
    path.write_text(json.dumps(data))
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 5_000_000))
    version = runtime.policies.current().version
    assert other.policies.current().version == version

    # The store's watcher thread may be the one that noticed the edit; its record follows it.
    deadline = time.monotonic() + 10
    reloads: list = []
    while not reloads and time.monotonic() < deadline:
        time.sleep(0.05)
        reloads = [r for r in records(runtime) if (r.adapter, r.operation) == ("policy", "reload")]
    time.sleep(0.3)  # a second record, if one were coming, is written by now
    reloads = [r for r in records(runtime) if (r.adapter, r.operation) == ("policy", "reload")]
    assert len(reloads) == 1, "each process that noticed the edit wrote its own record"
    assert reloads[0].request["version"] == version and reloads[0].mode == audit.LEDGER_MODE
    assert reloads[0].request["changed"] == ["adapters.stripe.dry_run", "security.require_quorum_for_critical"]
    assert cli(env, "audit", "verify").returncode == 0


def policy_records(runtime) -> list[AuditRecord]:
    return [r for r in records(runtime) if r.adapter == "policy"]


def test_a_policy_edit_made_while_the_stack_was_stopped_is_recorded_at_start(env, runtime, tmp_path,
                                                                              monkeypatch) -> None:
    """No process was running to see the edit, and each one read the edited file at start: the
    chain never heard of it. Now the starting commands compare the file with the last record."""
    from aurora import policy as policy_mod

    path = Path(env["AURORA_POLICY_FILE"])
    starting = {**env, "AURORA_CLI_CONFIG": str(tmp_path / "cli.json")}
    assert cli(starting, "bootstrap").returncode == 0  # what `aurora up` runs first
    [first] = policy_records(runtime)
    assert first.operation == "start" and first.request["previous"] is None and "first start" in first.reason
    assert first.request["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()  # as sha256sum says
    assert cli(starting, "db", "upgrade").returncode == 0
    assert len(policy_records(runtime)) == 1  # unchanged: nothing written

    data = json.loads(path.read_text())  # the stack is stopped: an edit, and nobody looking
    data["security"]["canary_percent"] = 50
    data["adapters"]["stripe"]["dry_run"] = False
    path.write_text(json.dumps(data, indent=1))
    done = cli(starting, "db", "upgrade")  # the web unit's first step
    assert done.returncode == 0, done.stderr
    [_, edited] = policy_records(runtime)
    assert edited.operation == "start" and "while stopped" in edited.reason
    assert edited.request["previous"] == first.request["version"] != edited.request["version"]
    assert edited.request["previous_sha256"] == first.request["sha256"]
    assert edited.request["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    # which keys moved, though nobody held the old file's content: the last record's key digests
    assert edited.request["changed"] == ["adapters.stripe.dry_run", "security.canary_percent"]
    digest = edited.request["keys"]["security.canary_percent"]  # a digest, never the value
    assert isinstance(digest, str) and len(digest) == 16 and digest != first.request["keys"]["security.canary_percent"]

    # back to the first version while running: a reload to a version recorded before is recorded too
    monkeypatch.setattr(policy_mod, "RELOAD_CHECK_INTERVAL", 0.0)
    runtime.policies.current()
    shutil.copy(ROOT / "policy" / "batch8_policy.json", path)
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 5_000_000))
    assert runtime.policies.current().version == first.request["version"]
    deadline = time.monotonic() + 10
    while len(policy_records(runtime)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    [*_, back] = policy_records(runtime)
    assert back.operation == "reload" and back.request["version"] == first.request["version"]
    assert back.request["previous"] == edited.request["version"]
    assert cli(env, "audit", "verify").returncode == 0


def test_an_inserted_record_is_named_wherever_it_goes(env, runtime) -> None:
    """Insertions: one slipped between two records (the later ones renumbered), and one appended
    at the head by someone without the key. Each is named by its number."""
    from sqlalchemy import insert

    runs(runtime, 3)
    with runtime.db.write() as session:
        first, second = session.scalars(select(AuditRecord).order_by(AuditRecord.pk)).all()[:2]
        forged = {c.name: getattr(first, c.name) for c in AuditRecord.__table__.columns}
        for pk in (3, 2):  # make room after the first record
            session.execute(update(AuditRecord).where(AuditRecord.pk == pk).values(pk=pk + 1))
        forged.update(pk=2, reason="inserted", prev_hash=first.hash)
        forged["hash"] = audit.record_hash(first.hash, AuditRecord(**forged), b"k" * 32)  # no key of ours
        session.execute(insert(AuditRecord).values(**forged))
    done = cli(env, "audit", "verify")
    assert done.returncode == 1 and "record 2" in done.stderr, done.stderr
    with runtime.db.write() as session:  # undo it: the chain is whole again
        session.execute(delete(AuditRecord).where(AuditRecord.pk == 2))
        for pk in (3, 4):
            session.execute(update(AuditRecord).where(AuditRecord.pk == pk).values(pk=pk - 1))
    assert cli(env, "audit", "verify").returncode == 0
    with runtime.db.write() as session:
        head = session.scalars(select(AuditRecord).order_by(AuditRecord.pk.desc())).first()
        appended = {c.name: getattr(head, c.name) for c in AuditRecord.__table__.columns}
        appended.update(pk=head.pk + 1, reason="appended", prev_hash=head.hash)
        appended["hash"] = hashlib.sha256((head.hash + audit._canonical(AuditRecord(**appended))).encode()).hexdigest()
        session.execute(insert(AuditRecord).values(**appended))
    done = cli(env, "audit", "verify")
    assert done.returncode == 1 and f"record {head.pk + 1}" in done.stderr, done.stderr


def test_a_person_removed_is_in_the_chain(env, runtime) -> None:
    from aurora import people

    keys.create(runtime.db, "carol-laptop", Role.APPROVER, person="carol")
    keys.create(runtime.db, "carol-phone", Role.APPROVER, person="carol")
    people.remove_person(runtime.db, "carol")
    ledger = [(r.adapter, r.operation, r.request) for r in records(runtime) if r.mode == audit.LEDGER_MODE]
    assert [(a, o) for a, o, _ in ledger] == [("keys", "create"), ("keys", "create"), ("people", "remove")]
    assert ledger[0][2]["person"] == "carol" and sorted(ledger[2][2]["keys"]) == ["carol-laptop", "carol-phone"]
    assert cli(env, "audit", "verify").returncode == 0

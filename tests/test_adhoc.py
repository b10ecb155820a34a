"""The seed's module-level adapter functions outside a run: never live, whatever the policy says,
always audited, each with its own idempotency key; and each adapter's file runs as a script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from test_adapters_live import SECRETS, live  # noqa: F401 - the fixture

from aurora.adapters import mailgun_adapter, social_adapter, stripe_adapter
from aurora.models import AuditRecord, Run, utcnow

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def seed_env(live, env, monkeypatch):  # noqa: F811
    """The seed's functions read the AURORA_* environment, as a user's script would."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return live


def test_the_seed_api_with_a_live_policy_sends_nothing_and_is_audited(seed_env) -> None:
    results = [
        stripe_adapter.charge_customer("cus_123", 150, "EUR"),
        mailgun_adapter.send_mail("kunde@example.com", "Betreff", "Text"),
        social_adapter.post_to_social("facebook", "Post-Text"),
    ]
    for server in seed_env.servers.values():
        assert server.received == []  # not one request reached a provider
    for result in results:
        assert result["dry_run"] is True and result["mode"] == "simulated"
        assert result["reason"].startswith("outside a run") and "submit a workflow" in result["reason"]
        assert result["audit"]["recorded"] is True
    assert results[0]["msg"] == "Simulated charge" and results[0]["request"]["form"]["amount"] == 15000
    with seed_env.runtime.db.read() as session:
        records = list(session.scalars(select(AuditRecord).order_by(AuditRecord.pk)))
    assert [(r.adapter, r.mode, r.run_id) for r in records] == [
        ("stripe", "simulated", None), ("mailgun", "simulated", None), ("social", "simulated", None)]
    assert records[0].pk == results[0]["audit"]["pk"] and "submit a workflow" in records[0].reason
    assert SECRETS["stripe"]["secret_key"] not in json.dumps([r.request for r in records])


def test_two_ad_hoc_calls_carry_different_idempotency_keys(seed_env) -> None:
    first = stripe_adapter.charge_customer("cus_1", "10.00", "EUR")
    second = stripe_adapter.charge_customer("cus_2", "20.00", "EUR")
    keys = [r["request"]["headers"]["Idempotency-Key"] for r in (first, second)]
    assert keys[0] != keys[1] and all(k.startswith("aurora-adhoc-") for k in keys)


def test_a_live_mode_handed_to_an_ad_hoc_call_is_still_simulated(seed_env) -> None:
    from aurora.adapters import Mode
    from aurora.adapters.context import default_context

    result = stripe_adapter.StripeAdapter().call({"customer": "cus_1", "amount": "1.00", "currency": "EUR"},
                                                 default_context(), Mode(True, "forced"))
    assert result.mode.live is False and seed_env.servers["stripe"].received == []


def _pythons() -> list[str]:
    found = [sys.executable]
    plain = shutil.which("python3")
    if plain and Path(plain).resolve() != Path(sys.executable).resolve():
        found.append(plain)  # the user's own python3, maybe without Aurora's dependencies
    return found


@pytest.mark.parametrize("name, msg", [("stripe", "Simulated charge"), ("mailgun", "Simulated mail send"),
                                       ("typeform", None), ("social", None)])
def test_each_adapter_file_runs_as_a_script_from_the_repo_root(name, msg, tmp_path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AURORA_HOME": str(tmp_path / "var"),
           "AURORA_SECRETS_FILE": str(tmp_path / "none.json")}
    for python in _pythons():
        done = subprocess.run([python, f"aurora/adapters/{name}_adapter.py"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (python, done.stderr[-2000:])
        report = json.loads(done.stdout)
        assert report["adapter"] == name and report["simulated_call"]["ok"] is True
        if msg:
            assert report["simulated_call"]["msg"] == msg


def test_a_live_call_naming_a_run_id_without_its_act_lease_is_not_live(seed_env) -> None:
    """Adapter.call trusts no run id: a live call needs the grant a worker hands it (the run in
    its act phase under that worker's unexpired lease, by the database's clock)."""
    from dataclasses import replace

    from aurora import documents
    from aurora.adapters.base import LiveCallRefused, Mode
    from aurora.adapters.context import default_context
    from aurora.leases import ActLease

    engine = seed_env.runtime.engine
    charge = {"customer": "cus_1", "amount": "1.00", "currency": "EUR", "payment_method": "pm_1"}
    adapter = stripe_adapter.StripeAdapter()
    forged = replace(default_context(), run_id="any-run-id-at-all")
    result = adapter.call(charge, forged, Mode(True, "forged"))
    assert result.mode.live is False and "without proof" in result.mode.reason
    # a real run's id, with a grant, but the run is not acting under that worker's lease
    run = engine.submit(documents.load(json.dumps({"name": "p", "goal": "charge", "payload": charge}), fmt="json"),
                        "sam")
    for owner in ("worker-a", "worker-b"):
        with pytest.raises(LiveCallRefused, match="not in its act phase"):
            adapter.call(charge, replace(forged, run_id=run.id, grant=ActLease(engine.db, owner)), Mode(True, "forged"))
    with engine.db.write() as session:  # worker-a holds it in its act phase
        session.execute(update(Run).where(Run.id == run.id).values(status="running", step="act", lease_owner="worker-a",
                                                                    lease_expires_at=utcnow() + timedelta(minutes=5)))
    with pytest.raises(LiveCallRefused, match="not under this worker's lease"):
        adapter.call(charge, replace(forged, run_id=run.id, grant=ActLease(engine.db, "worker-b")), Mode(True, "forged"))
    assert seed_env.servers["stripe"].received == []
    acted = adapter.call(charge, replace(forged, run_id=run.id, grant=ActLease(engine.db, "worker-a")), Mode(True, "ok"))
    assert acted.mode.live and len(seed_env.servers["stripe"].requests_to("/v1/payment_intents")) == 1


def test_the_self_test_form_writes_an_audit_record(runtime, env) -> None:
    """``python3 aurora/adapters/stripe_adapter.py`` is an ad-hoc call like the seed's functions."""
    done = subprocess.run([sys.executable, "aurora/adapters/stripe_adapter.py"], cwd=ROOT,
                          env={**env, "PATH": "/usr/bin:/bin", "HOME": env["AURORA_HOME"]},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["simulated_call"]["audit"]["recorded"] is True
    with runtime.db.read() as session:
        [record] = session.scalars(select(AuditRecord))
    assert (record.adapter, record.mode, record.run_id, record.pk) == (
        "stripe", "simulated", None, report["simulated_call"]["audit"]["pk"])
    assert "outside a run" in record.reason

"""Policy validation and reload, secrets handling and redaction, money, and the mode decision."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from aurora import policy as policy_mod
from aurora.adapters import stripe_adapter
from aurora.errors import AmountError, PolicyError, SecretsError
from aurora.money import to_minor_units
from aurora.policy import PolicyStore, parse_policy
from aurora.secrets import REDACTED, load_secrets

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = json.loads((ROOT / "policy" / "batch8_policy.json").read_text())


def test_shipped_policy_is_safe_by_default() -> None:
    policy = parse_policy(json.dumps(DEFAULT))
    assert policy.dry_run is True
    assert not any(DEFAULT[k] for k in ("allow_payments", "allow_external_posting", "allow_typeform_auto_ingest"))
    assert DEFAULT["federation_enabled"] is False
    assert policy.quorum_for_critical == 2
    assert policy.required_approvals(critical=True, require_approval=False) == 2
    assert policy.required_approvals(critical=False, require_approval=True) == 1
    assert policy.required_approvals(critical=False, require_approval=False) == 0


def test_a_typo_in_a_safety_switch_is_an_error_naming_the_key() -> None:
    broken = {**DEFAULT, "allow_payment": True}
    with pytest.raises(PolicyError, match="allow_payment: unknown key"):
        parse_policy(json.dumps(broken))
    nested = json.loads(json.dumps(DEFAULT))
    nested["security"]["canary_percnt"] = 5
    with pytest.raises(PolicyError, match="security.canary_percnt: unknown key"):
        parse_policy(json.dumps(nested))
    wrong_type = {**DEFAULT, "dry_run": "no"}
    with pytest.raises(PolicyError, match="dry_run"):
        parse_policy(json.dumps(wrong_type))
    with pytest.raises(PolicyError, match="not valid JSON"):
        parse_policy("{")


def test_edits_reload_and_broken_edits_keep_the_last_good_policy(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(policy_mod, "RELOAD_CHECK_INTERVAL", 0.0)
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(DEFAULT))
    store = PolicyStore(path)
    assert store.current().quorum_for_critical == 2

    changed = json.loads(json.dumps(DEFAULT))
    changed["security"]["require_quorum_for_critical"] = 3
    path.write_text(json.dumps(changed))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert store.current().quorum_for_critical == 3
    assert store.last_error is None

    path.write_text(json.dumps({**changed, "dry_run": False, "oops": 1}))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2_000_000))
    current = store.current()
    assert current.quorum_for_critical == 3 and current.dry_run is True
    assert "oops: unknown key" in (store.last_error or "")


def test_a_policy_file_others_may_write_is_refused(tmp_path: Path, monkeypatch) -> None:
    """It is hot-reloaded: whoever may write it may turn payments live."""
    monkeypatch.setattr(policy_mod, "RELOAD_CHECK_INTERVAL", 0.0)
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(DEFAULT))
    path.chmod(0o666)
    with pytest.raises(PolicyError, match="writable by group or others.*chmod go-w"):
        PolicyStore(path).current()  # a bad file at start leaves no policy: current() refuses
    path.chmod(0o644)
    store = PolicyStore(path)
    path.write_text(json.dumps({**DEFAULT, "dry_run": False}))
    path.chmod(0o646)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert store.current().dry_run is True and "chmod go-w" in (store.last_error or "")


def test_broken_policy_at_start_is_fatal(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({**DEFAULT, "allow_paymnts": True}))
    with pytest.raises(PolicyError, match="allow_paymnts"):
        PolicyStore(path).current()
    with pytest.raises(PolicyError, match="cannot read"):
        PolicyStore(tmp_path / "missing.json").current()


def test_secrets_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "external_secrets.json"
    path.write_text(json.dumps({"mailgun": {"api_key": "key-real-123456"}}))
    path.chmod(0o644)
    with pytest.raises(SecretsError, match="chmod 600"):
        load_secrets(path, environ={})
    path.chmod(0o600)
    assert load_secrets(path, environ={}).get("mailgun", "api_key") == "key-real-123456"


def test_placeholders_mean_not_configured_and_env_overrides(tmp_path: Path) -> None:
    path = tmp_path / "external_secrets.json"
    path.write_text((ROOT / "policy" / "external_secrets.example.json").read_text())
    path.chmod(0o600)
    secrets = load_secrets(path, environ={"AURORA_SECRET_STRIPE_SECRET_KEY": "sk_test_fromenv123",
                                          "AURORA_SECRET_SOCIAL_FACEBOOK_ACCESS_TOKEN": "EAAenvtoken"})
    assert secrets.get("mailgun", "api_key") is None
    assert secrets.get("mailgun", "domain") == "mg.example.com"
    assert secrets.get("stripe", "secret_key") == "sk_test_fromenv123"
    assert secrets.get("social", "facebook", "access_token") == "EAAenvtoken"
    redacted = secrets.redact({"log": "Bearer sk_test_fromenv123 and EAAenvtoken", "n": [1, "sk_test_fromenv123"]})
    assert redacted == {"log": f"Bearer {REDACTED} and {REDACTED}", "n": [1, REDACTED]}
    assert secrets.redact("mg.example.com") == "mg.example.com"


@pytest.mark.parametrize("amount, currency, minor", [
    ("150.00", "EUR", 15000), (150, "EUR", 15000), ("0.5", "usd", 50), ("500", "JPY", 500), ("1.234", "KWD", 1234),
])
def test_minor_units(amount, currency, minor) -> None:
    assert to_minor_units(amount, currency) == minor


@pytest.mark.parametrize("amount, currency", [(150.0, "EUR"), ("1.001", "EUR"), ("1.5", "JPY"), ("abc", "EUR"),
                                              ("-5", "EUR"), ("5", "EURO"), (True, "EUR")])
def test_bad_amounts(amount, currency) -> None:
    with pytest.raises(AmountError):
        to_minor_units(amount, currency)


def test_seed_python_api_returns_a_simulated_charge_with_the_exact_request() -> None:
    result = stripe_adapter.charge_customer("cus_123", 150, "EUR")
    assert result["dry_run"] is True and result["msg"] == "Simulated charge"
    assert result["request"]["form"]["amount"] == 15000
    assert result["request"]["form"]["currency"] == "eur"
    assert REDACTED in result["request"]["headers"]["Authorization"]

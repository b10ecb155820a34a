"""Encrypted secrets backups: a round trip restores both files 0600; a wrong passphrase, a changed
byte or another audit key in place is refused and writes nothing."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

SECRET = "sk_test_backupSECRET4242"
PASSPHRASE = "correct horse battery staple"


def cli(env: dict[str, str], *args: str, passphrase: str = PASSPHRASE) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aurora", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env, "AURORA_BACKUP_PASSPHRASE": passphrase})


def test_backup_and_restore_round_trip_and_refusals(env, runtime, tmp_path) -> None:
    secrets = Path(env["AURORA_SECRETS_FILE"])
    secrets.write_text(json.dumps({"stripe": {"secret_key": SECRET}}))
    secrets.chmod(0o600)
    runtime.db.audit_key()  # made on first use
    key_file = Path(env["AURORA_HOME"]) / "audit.key"
    key = key_file.read_text()
    backup = tmp_path / "backup.json"
    made = cli(env, "secrets", "backup", str(backup))
    assert made.returncode == 0, made.stderr
    assert SECRET not in backup.read_text() and key.strip() not in backup.read_text()
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600

    secrets.unlink()
    key_file.unlink()
    wrong = cli(env, "secrets", "restore", str(backup), passphrase="not the passphrase at all")
    assert wrong.returncode == 1 and "wrong passphrase" in wrong.stderr
    assert not secrets.exists() and not key_file.exists()
    tampered = tmp_path / "tampered.json"
    body = json.loads(backup.read_text())
    body["n"] = 2**14  # the header is authenticated too
    tampered.write_text(json.dumps(body))
    assert cli(env, "secrets", "restore", str(tampered)).returncode == 1 and not secrets.exists()

    restored = cli(env, "secrets", "restore", str(backup))
    assert restored.returncode == 0, restored.stderr
    assert json.loads(secrets.read_text())["stripe"]["secret_key"] == SECRET and key_file.read_text() == key
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600 and stat.S_IMODE(key_file.stat().st_mode) == 0o600

    key_file.write_text("ab" * 32 + "\n")  # another key in place: never overwritten
    refused = cli(env, "secrets", "restore", str(backup))
    assert refused.returncode == 1 and "another audit key" in refused.stderr
    assert key_file.read_text() == "ab" * 32 + "\n"


def test_doctor_wants_a_recent_backup(env, runtime, tmp_path) -> None:
    secrets = Path(env["AURORA_SECRETS_FILE"])
    secrets.write_text(json.dumps({"stripe": {"secret_key": SECRET}}))
    secrets.chmod(0o600)

    def finding() -> dict:
        findings = json.loads(cli(env, "doctor", "--json").stdout)
        return next(f for f in findings if f["check"] == "secrets backup")

    assert finding()["level"] == "warn" and "aurora secrets backup" in finding()["fix"]
    assert cli(env, "secrets", "backup", str(tmp_path / "b.json")).returncode == 0
    assert finding()["level"] == "ok"
    os.utime(secrets, (time.time() + 5, time.time() + 5))  # an edit after the backup
    assert finding()["level"] == "warn" and "changed after" in finding()["message"]

"""The systemd units in deploy/: valid for systemd itself, hardened, and keeping work on a stop.

``systemd-analyze`` and ``systemd-sysusers`` need no running systemd; tests that need them are
skipped when they are missing, and fail in CI (``.ci/run`` installs Debian's ``systemd``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, missing

DEPLOY = ROOT / "deploy"
UNITS = sorted(DEPLOY.glob("*.service"))
WORKERS = ("aurora-worker.service", "aurora-system-worker.service", "aurora-beat.service")


def settings(unit: Path) -> dict[str, list[str]]:
    """Each key of a unit's [Service] section with every value it is given."""
    found: dict[str, list[str]] = {}
    section = ""
    for line in unit.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        missing(f"{name} (Debian package systemd)")
    return path


def test_every_process_has_a_unit_and_the_units_keep_work() -> None:
    names = {u.name for u in UNITS}
    assert names == {"aurora-web.service", *WORKERS}
    for unit in UNITS:
        conf = settings(unit)
        assert conf["KillMode"] == ["mixed"], unit.name  # SIGTERM to the main process only
        assert conf["Restart"] == ["always"], unit.name  # Celery may exit 0 after a fatal error
        assert conf["StateDirectory"] == ["aurora"] and conf["User"] == ["aurora"], unit.name
        assert conf["WorkingDirectory"] == ["/var/lib/aurora"], unit.name
    for name in ("aurora-worker.service", "aurora-system-worker.service"):
        stop = int(settings(DEPLOY / name)["TimeoutStopSec"][0])
        assert stop > 60, "TimeoutStopSec must cover the default lease (AURORA_LEASE_SECONDS=60)"
    assert "aurora worker --system" in (DEPLOY / "aurora-system-worker.service").read_text()
    env = (DEPLOY / "aurora.env.example").read_text()
    assert re.search(r"^AURORA_HOME=/var/lib/aurora$", env, re.M)


def test_the_units_are_valid_for_systemd(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    # verify checks that ExecStart= exists: point the copies at this virtualenv's commands.
    for unit in UNITS:
        (tmp_path / unit.name).write_text(unit.read_text().replace("/opt/aurora/venv/bin/",
                                                                   str(Path(sys.executable).parent) + "/"))
    done = subprocess.run([analyze, "verify", *sorted(str(p) for p in tmp_path.glob("*.service"))],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "aurora" not in done.stderr, done.stderr


def test_the_units_are_hardened(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    for unit in UNITS:
        done = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(unit)],
                              capture_output=True, text=True, timeout=60)
        if "--offline" in done.stderr and "unrecognized" in done.stderr:
            pytest.skip("systemd-analyze older than 250: no offline security report")
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
        assert match, done.stdout + done.stderr
        assert float(match.group(1)) <= 2.0, f"{unit.name}: exposure {match.group(1)}\n{done.stdout}"


def test_the_sysusers_file_creates_the_aurora_user(tmp_path: Path) -> None:
    sysusers = tool("systemd-sysusers")
    (tmp_path / "etc").mkdir()
    done = subprocess.run([sysusers, f"--root={tmp_path}", str(DEPLOY / "aurora.sysusers")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    user = [line for line in (tmp_path / "etc" / "passwd").read_text().splitlines() if line.startswith("aurora:")]
    assert len(user) == 1 and user[0].endswith(":/var/lib/aurora:/usr/sbin/nologin"), user


def test_the_readme_installs_what_deploy_holds() -> None:
    readme = (ROOT / "README.md").read_text()
    production = readme[readme.index("## Production"):readme.index("## More")]
    for needed in ("aurora.sysusers", "systemd-sysusers", "/etc/aurora", "aurora-system-worker",
                   "daemon-reload", "install -d"):
        assert needed in production, needed

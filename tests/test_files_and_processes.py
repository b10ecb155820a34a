"""Files and processes: the database (and its WAL) private to its user, `aurora up` making
everything 0600/0700, and its children never importing `aurora` from the current directory."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
import time
from pathlib import Path

from conftest import free_port
from sqlalchemy import text

HIJACK = 'raise SystemExit("hijacked: aurora was imported from the current directory")\n'


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_sqlite_database_and_its_wal_are_0600(runtime, env) -> None:
    database = Path(env["AURORA_DATABASE_URL"].removeprefix("sqlite:///"))
    with runtime.db.write() as session:
        session.execute(text("SELECT 1"))
    assert mode(database) == 0o600
    for extra in (Path(f"{database}-wal"), Path(f"{database}-shm")):
        if extra.exists():
            assert mode(extra) == 0o600, extra


def test_the_stacks_children_cannot_be_shadowed_by_the_current_directory(tmp_path) -> None:
    from aurora.cli.stack import child_commands

    (tmp_path / "aurora").mkdir()
    (tmp_path / "aurora" / "__init__.py").write_text(HIJACK)
    for name, command in child_commands((3,), {"web": 4}).items():
        program = command[:command.index("-m") + 2]
        done = subprocess.run([*program, "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "hijacked" not in done.stderr, (name, done.stderr)


def test_aurora_up_makes_private_files_and_ignores_an_aurora_folder_in_its_directory(make_stack) -> None:
    stack = make_stack()
    (stack.cwd / "aurora").mkdir()
    (stack.cwd / "aurora" / "__init__.py").write_text(HIJACK)
    stack.port = free_port()
    log = stack.cwd / "up.log"
    stack.logs["up"] = log
    # The supervisor itself as the `aurora` script starts it: without the current directory on its path.
    stack.procs["up"] = subprocess.Popen(
        [sys.executable, "-P", "-m", "aurora", "up", "--port", str(stack.port)], env=stack.env, cwd=stack.cwd,
        stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)  # noqa: SIM115
    deadline = time.monotonic() + 60
    while not re.search(r"AURORA_TOKEN=aur_", stack.log("up")) and time.monotonic() < deadline:
        time.sleep(0.1)
    stack.wait_healthy()
    assert "hijacked" not in stack.log("up") + stack.up_logs()
    home = Path(stack.env["AURORA_HOME"])
    database = Path(stack.env["AURORA_DATABASE_URL"].removeprefix("sqlite:///"))
    assert mode(database) == 0o600 and mode(home) == 0o700 and mode(home / "broker") == 0o700
    assert mode(home / "audit.key") == 0o600 if (home / "audit.key").exists() else True

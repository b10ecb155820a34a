"""``aurora up``: migrate, make the first admin key, then run web, worker and beat together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from .config import Settings


def gunicorn_command(binds: Sequence[str], workers: int, threads: int = 4) -> list[str]:
    command = [sys.executable, "-m", "gunicorn", "--worker-class", "gthread",
               "--workers", str(workers), "--threads", str(threads), "--graceful-timeout", "10", "--no-control-socket"]
    for bind in binds:
        command += ["--bind", bind]
    return [*command, "--config", "python:aurora.gunicorn_conf", "aurora.web.wsgi:app"]


def prepare(settings: Settings, url: str) -> str | None:
    """Migrate the database; on first start make an admin key, store it for the CLI, return it."""
    from . import keys
    from .client import write_config
    from .migrations import upgrade
    from .models import Role
    from .runtime import get_runtime

    settings.home.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    db = get_runtime().db
    if keys.any_admin(db):
        return None
    name = "admin"
    existing = {k["name"] for k in keys.listing(db)}
    suffix = 1
    while name in existing:
        suffix += 1
        name = f"admin-{suffix}"
    key = keys.create(db, name, Role.ADMIN)
    write_config(url, key)
    return key


def run_stack(commands: dict[str, list[str]]) -> int:
    """Start every process; when one ends or a signal comes, stop the others. Return an exit code."""
    children = {name: subprocess.Popen(cmd, start_new_session=True) for name, cmd in commands.items()}
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    try:
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    print(f"aurora: {name} exited with {child.returncode}; stopping the stack", file=sys.stderr)
                    code = child.returncode or 1
                    stopping = True
            time.sleep(0.2)
    finally:
        for child in children.values():
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in children.values():
            try:
                child.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
    return code

"""A new user's first hour, its first minute: a fresh clone to a healthy stack with `make run`.

Clones this repository (its committed HEAD) into a temporary folder, runs `make run` there on free
ports, and times the clone, the install (until `make run`'s stamp appears), the start-up block and
the first `/health` that says "ok" (database, broker, workers, beat). The baseline, measured in the
same invocation, is the install `make run` did before (the package with its test tools,
`pip install -e '.[test]'`) in a venv of its own. pip's cache is whatever this machine has: warm
for both when the machine has installed Aurora before.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
GOAL_S = 45.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _size_mb(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) / 2**20, 1)


def measure(baseline: bool = True) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="aurora-first-start-"))
    clone = tmp / "aurora"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AURORA_")}
    env.update(AURORA_CLI_CONFIG=str(tmp / "cli.json"), PYTHONUNBUFFERED="1")
    ports = [_free_port(), _free_port()]
    out = tmp / "make-run.log"
    started = time.perf_counter()
    try:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
        cloned = time.perf_counter() - started
        with open(out, "wb") as handle:
            proc = subprocess.Popen(["make", "run", f"UP_ARGS=--port {ports[0]} --port {ports[1]}"], cwd=clone,
                                    env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        installed = block = healthy = None
        deadline = time.monotonic() + 600
        while healthy is None and time.monotonic() < deadline and proc.poll() is None:
            now = time.perf_counter() - started
            if installed is None and (clone / ".venv" / ".run-stamp").exists():
                installed = now
            if block is None and "Ctrl-C stops everything." in out.read_text(errors="replace"):
                block = now
            try:
                if requests.get(f"http://127.0.0.1:{ports[0]}/health", timeout=2).json().get("status") == "ok":
                    healthy = now
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        if healthy is None:
            raise RuntimeError("the stack never became healthy:\n" + out.read_text(errors="replace")[-3000:])
        result = {"clone_s": round(cloned, 1), "installed_s": round(installed or 0, 1),
                  "block_s": round(block or 0, 1), "healthy_s": round(healthy, 1),
                  "venv_mb": _size_mb(clone / ".venv"), "goal": f"healthy <= {GOAL_S:.0f} s"}
        if baseline:
            begun = time.perf_counter()
            subprocess.run([sys.executable, "-m", "venv", str(tmp / "full")], check=True)
            subprocess.run([str(tmp / "full" / "bin" / "python"), "-m", "pip", "install", "--quiet", "-e",
                            f"{clone}[test]"], check=True, capture_output=True, timeout=900)
            result["baseline_install_with_tests_s"] = round(time.perf_counter() - begun, 1)
            result["baseline_venv_mb"] = _size_mb(tmp / "full")
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    import json

    print(json.dumps(measure(baseline="--no-baseline" not in sys.argv), indent=2))

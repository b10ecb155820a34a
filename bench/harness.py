"""Helpers for the benchmarks: temporary homes, processes, percentiles, memory."""

from __future__ import annotations

import http.client
import json
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LeanClient:
    """One kept-alive HTTP/1.1 connection through the standard library: what a timed client
    costs on these two cores should be the server's, not the client library's (requests spends
    ~1 ms of CPU per call here merging settings and proxies; measured beside it, docs/benchmarks.md)."""

    def __init__(self, url: str):
        host, _, port = url.removeprefix("http://").partition(":")
        self.connection = http.client.HTTPConnection(host, int(port.rstrip("/") or 80), timeout=60)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        try:
            self.connection.request("POST", path, body=body, headers=headers)
            response = self.connection.getresponse()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            # the server closed the kept-alive connection while it was idle: once more, on a new one
            self.connection.close()
            self.connection.request("POST", path, body=body, headers=headers)
            response = self.connection.getresponse()
        return response.status, response.read()

    def post_json(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, object]:
        status, data = self.post(path, body, headers)
        return status, json.loads(data)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


class Procs:
    """Processes started for one measurement; all stopped on exit."""

    def __init__(self, env: dict[str, str], cwd: Path):
        self.env, self.cwd, self.procs = env, cwd, []

    def start(self, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen(list(args), env=self.env, cwd=self.cwd, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        return proc

    def aurora(self, *args: str) -> subprocess.Popen:
        return self.start(sys.executable, "-m", "aurora", *args)

    def run(self, *args: str) -> str:
        return subprocess.run([sys.executable, "-m", "aurora", *args], env=self.env, cwd=self.cwd,
                              capture_output=True, text=True, check=True).stdout

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.procs = []

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def aurora_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AURORA_")}
    env.update({
        "AURORA_HOME": str(home / "var"),
        "AURORA_DATABASE_URL": os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{home / 'aurora.db'}",
        "AURORA_BROKER_URL": "filesystem://",
        "AURORA_POLICY_FILE": str(ROOT / "policy" / "batch8_policy.json"),
        "AURORA_SECRETS_FILE": str(home / "secrets.json"),
        "AURORA_NODE_NAME": "bench",
        "AURORA_CLI_CONFIG": str(home / "cli.json"),
        **extra,
    })
    return env


def temp_home() -> Path:
    return Path(tempfile.mkdtemp(prefix="aurora-bench-"))


def cleanup(home: Path) -> None:
    shutil.rmtree(home, ignore_errors=True)


def wait_http(url: str, timeout: float = 60, workers: bool = False) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            body = requests.get(url + "/health", timeout=2).json()
            if not workers or body["components"]["workers"]["ok"]:
                return
        except (requests.RequestException, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def wait_port(port: int, timeout: float = 60) -> None:
    """Until something accepts connections on 127.0.0.1:``port`` (for apps without /health)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def tree_rss_mb(pid: int, proportional: bool = False) -> float:
    """Resident memory of a process and all its descendants, in MB (from /proc): the sum of their
    RSS, which counts a page shared by several (a forked child's) in each; ``proportional``: the
    sum of their PSS, which shares it out."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    source, field = ("smaps_rollup", "Pss:") if proportional else ("status", "VmRSS:")
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        stack.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/{source}").read_text().splitlines():
                if line.startswith(field):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def gunicorn(port: int, app: str, chdir: Path, workers: int = 2, threads: int = 4) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", str(workers),
            "--threads", str(threads), "--no-control-socket", "--chdir", str(chdir),
            "--bind", f"127.0.0.1:{port}", app]

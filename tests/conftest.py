"""Fixtures: settings on a temporary SQLite database, the Flask app and client, real Redis and
PostgreSQL, and whole Aurora stacks started as real processes.

A test that needs a service which is not there is skipped locally; with
``AURORA_TEST_REQUIRE_SERVICES=1`` (set by ``.ci/run``) it fails instead.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from aurora import keys
from aurora.config import load_settings
from aurora.migrations import upgrade
from aurora.models import Role
from aurora.runtime import Runtime, set_runtime

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_SERVICES = os.environ.get("AURORA_TEST_REQUIRE_SERVICES") == "1"


def missing(why: str) -> None:
    """Skip, or fail when CI demands every service."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service missing: {why}")
    pytest.skip(why)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def descendants(pid: int) -> dict[int, str]:
    """Every living process below ``pid``: pid -> command line."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        current = todo.pop()
        for child, parent in parents.items():
            if parent == current and child not in found:
                try:
                    found[child] = (Path("/proc") / str(child) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    found[child] = ""
                todo.append(child)
    return found


# -- in-process fixtures ----------------------------------------------------------------------

@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """AURORA_* settings for a private home, SQLite database and filesystem broker."""
    policy = tmp_path / "policy.json"
    shutil.copy(ROOT / "policy" / "batch8_policy.json", policy)
    return {
        "AURORA_HOME": str(tmp_path / "var"),
        "AURORA_DATABASE_URL": f"sqlite:///{tmp_path / 'aurora.db'}",
        "AURORA_BROKER_URL": "filesystem://",
        "AURORA_POLICY_FILE": str(policy),
        "AURORA_SECRETS_FILE": str(tmp_path / "secrets.json"),
        "AURORA_NODE_NAME": "test-node",
    }


@pytest.fixture
def runtime(env: dict[str, str]) -> Iterator[Runtime]:
    rt = Runtime(load_settings(env))
    upgrade(rt.settings.database_url)
    set_runtime(rt)
    yield rt
    set_runtime(None)


@pytest.fixture
def app(runtime: Runtime) -> Any:
    from aurora.web import create_app

    return create_app({"TESTING": True})


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@dataclass
class Keys:
    admin: str
    submitter: str
    other_submitter: str
    approver: str
    viewer: str

    def header(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {getattr(self, role)}"}


@pytest.fixture
def api_keys(runtime: Runtime) -> Keys:
    return Keys(
        admin=keys.create(runtime.db, "admin", Role.ADMIN),
        submitter=keys.create(runtime.db, "sam", Role.SUBMITTER),
        other_submitter=keys.create(runtime.db, "sue", Role.SUBMITTER),
        approver=keys.create(runtime.db, "alice", Role.APPROVER),
        viewer=keys.create(runtime.db, "vic", Role.VIEWER),
    )


# -- real services ----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis database for this test session: the configured one, or a private server."""
    url = os.environ.get("AURORA_TEST_REDIS_URL")
    proc = None
    if not url:
        if reachable("127.0.0.1", 6379):
            url = "redis://127.0.0.1:6379/13"
        elif shutil.which("redis-server"):
            port = free_port()
            proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                     "--appendonly", "no"], stdout=subprocess.DEVNULL)
            deadline = time.monotonic() + 10
            while not reachable("127.0.0.1", port) and time.monotonic() < deadline:
                time.sleep(0.05)
            url = f"redis://127.0.0.1:{port}/0"
        else:
            missing("Redis: nothing on 127.0.0.1:6379 and no redis-server binary")
    import redis

    try:
        redis.Redis.from_url(url).flushdb()
    except redis.RedisError as exc:
        missing(f"Redis at {url}: {exc}")
    yield url
    if proc:
        proc.terminate()
        proc.wait()


@pytest.fixture
def rabbitmq_url() -> str:
    """RabbitMQ's default virtual host, its run and system queues emptied first."""
    url = os.environ.get("AURORA_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
            for queue in ("aurora", "aurora.system"):
                channel = conn.channel()
                try:
                    channel.queue_purge(queue)
                except Exception:  # noqa: BLE001 - not declared yet: nothing to empty
                    pass
                finally:
                    channel.close()
    except Exception as exc:  # noqa: BLE001
        missing(f"RabbitMQ at {url}: {exc.__class__.__name__}")
    return url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    import psycopg

    admin_url = os.environ.get("AURORA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    name = f"aurora_test_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        missing(f"PostgreSQL at {admin_url}: {exc.__class__.__name__}")
    base = admin_url.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    from aurora.db import forget

    forget(f"{base}/{name}")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')



@pytest.fixture(params=["sqlite", "postgresql"])
def each_db(request: Any, env: dict[str, str]) -> Runtime:
    """A runtime on a migrated database of each kind in turn: a test that takes it runs twice,
    on SQLite and on PostgreSQL."""
    if request.param == "postgresql":
        env = {**env, "AURORA_DATABASE_URL": request.getfixturevalue("postgres_url")}
    runtime = Runtime(load_settings(env))
    upgrade(runtime.settings.database_url)
    return runtime

# -- whole stacks as real processes -----------------------------------------------------------

@dataclass
class Stack:
    """Aurora processes started for one test; everything is stopped at teardown."""

    env: dict[str, str]
    cwd: Path
    port: int = 0
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def aurora(self, *args: str, check: bool = True, env: dict[str, str] | None = None,
               **kwargs: Any) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "aurora", *args], env=env or self.env, cwd=self.cwd,
                              capture_output=True, text=True, check=check, timeout=120, **kwargs)

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = self.cwd / f"{name}.log"
        self.logs[name] = log
        handle = open(log, "ab")  # noqa: SIM115 - closed with the process at teardown
        proc = subprocess.Popen([sys.executable, "-m", "aurora", *args], env=self.env, cwd=self.cwd,
                                stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM to each main process, as a supervisor does (a SIGTERM to the whole group
        reaches Celery's pool processes too, and the worker then waits for them); SIGKILL to the
        groups of what is still there after 20 s."""
        for name in list(self.procs):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name in list(self.procs):
            proc = self.procs.pop(name)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # children left behind, if any
            except ProcessLookupError:
                pass
            proc.wait()

    def log(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace") if name in self.logs else ""

    def up_logs(self) -> str:
        """What the children of ``aurora up`` wrote: its log files under AURORA_HOME/logs."""
        folder = Path(self.env["AURORA_HOME"]) / "logs"
        return "".join(path.read_text(errors="replace") for path in sorted(folder.glob("*.log")))

    def http(self, method: str, path: str, key: str = "admin", **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if key:
            headers.setdefault("Authorization", f"Bearer {self.keys[key]}")
        return requests.request(method, self.url + path, headers=headers, timeout=10, **kwargs)

    def wait_healthy(self, timeout: float = 60, workers: bool = True) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                body = requests.get(self.url + "/health", timeout=2).json()
                comps = body.get("components", {})
                if comps.get("database", {}).get("ok") and (not workers or comps.get("workers", {}).get("ok")):
                    return body
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"stack not healthy: {body}\n" + "\n".join(
            f"--- {n}\n{self.log(n)[-3000:]}" for n in self.logs))

    def read_first_key(self, name: str = "up", timeout: float = 60) -> str:
        """The admin key ``aurora up`` (started as ``name``) prints on first start."""
        deadline = time.monotonic() + timeout
        while "AURORA_TOKEN=" not in self.log(name) and time.monotonic() < deadline:
            time.sleep(0.1)
        match = re.search(r"AURORA_TOKEN=(aur_\S+)", self.log(name))
        assert match, self.log(name)
        self.keys["admin"] = match.group(1)
        return self.keys["admin"]

    def boot(self, *, workers: bool = True, concurrency: int = 2) -> Stack:
        """Migrate, make an admin key, start web + run worker + system worker + beat."""
        self.port = self.port or free_port()
        self.aurora("db", "upgrade")
        self.keys["admin"] = self.aurora("keys", "create", "admin", "--role", "admin").stdout.strip()
        self.start("web", "serve", "--port", str(self.port), "--workers", "1")
        if workers:
            self.start("worker", "worker", "-c", str(concurrency))
        self.start("system", "worker", "--system")
        self.start("beat", "beat")
        self.wait_healthy(workers=workers)
        return self

    def submit(self, name: str = "send_report", key: str = "admin") -> str:
        """Submit one of the example workflows; return the run id."""
        response = self.http("POST", "/workflows", key=key, data=(ROOT / "workflows" / f"{name}.yaml").read_bytes(),
                             headers={"Content-Type": "application/yaml"})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def wait_status(self, run_id: str, statuses: set[str], timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        run: dict[str, Any] = {}
        while time.monotonic() < deadline:
            run = self.http("GET", f"/workflows/{run_id}").json()
            if run.get("status") in statuses:
                return run
            time.sleep(0.1)
        raise AssertionError(f"run {run_id} is {run.get('status')}, wanted {statuses}\n" + "\n".join(
            f"--- {n}\n{self.log(n)[-3000:]}" for n in self.logs))


def environment_outside() -> dict[str, str]:
    """This process's environment without what a test or an in-process Runtime set for Aurora:
    ``AURORA_*``, and ``PROMETHEUS_MULTIPROC_DIR``, which a Runtime points at its own home (as a
    stack's supervisor does for its children) — inherited, every later stack would count into that
    one folder and show other tests' counters in its ``/metrics``."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AURORA_") and k != "PROMETHEUS_MULTIPROC_DIR"}


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Any]:
    """Build a stack: ``make_stack(database_url=..., broker_url=..., **extra_env)``."""
    stacks: list[Stack] = []

    def build(database_url: str | None = None, broker_url: str = "filesystem://", **extra: str) -> Stack:
        home = tmp_path / f"stack{len(stacks)}"
        home.mkdir()
        env = environment_outside()
        env.update({
            "AURORA_HOME": str(home / "var"),
            "AURORA_DATABASE_URL": database_url or f"sqlite:///{home / 'aurora.db'}",
            "AURORA_BROKER_URL": broker_url,
            "AURORA_POLICY_FILE": str(ROOT / "policy" / "batch8_policy.json"),
            "AURORA_SECRETS_FILE": str(home / "secrets.json"),
            "AURORA_NODE_NAME": f"node{len(stacks)}",
            "AURORA_CLI_CONFIG": str(home / "cli.json"),
            "AURORA_SWEEP_INTERVAL": "0.5",
            "PYTHONUNBUFFERED": "1",
            **extra,
        })
        stack = Stack(env=env, cwd=home)
        stacks.append(stack)
        return stack

    yield build
    for stack in stacks:
        stack.stop()


def shown(holder: Any, run_id: str) -> str | None:
    """The request hash approvers are shown for a waiting run now (``approval.hash`` of
    ``GET /workflows/<id>``): what a vote must name. ``holder`` is a runtime or an engine."""
    from sqlalchemy import select

    from aurora import ledger
    from aurora.models import Run

    engine = getattr(holder, "engine", holder)
    ledger.refresh(engine, [run_id])
    with engine.db.read() as session:
        binding = session.scalar(select(Run.approval_binding).where(Run.id == run_id))
    return (binding or {}).get("hash")


def seen(holder: Any, run_id: str, **body: Any) -> dict[str, Any]:
    """A vote's JSON body naming the request hash approvers are shown now (:func:`shown`)."""
    return {"request_hash": shown(holder, run_id), **body}


def whole_run(session: Any, run: Any) -> Any:
    """``run`` (a Run of ``session``) detached, with its whole result as Aurora shows it: the
    request and response its audit record holds put back (``aurora.run_results``)."""
    from aurora import run_results

    if run is not None:
        session.expunge(run)
        run.result = run_results.full(session, run.id, run.result)
    return run


def end_step_unhanded(runtime: Any, run_id: str) -> None:
    """A step ends on the general path (its call made after the claim commits: here a simulated
    call with a latency) and its worker dies before it hands its workflow on — what ``execute``
    does next. (A dry-run step settled fresh hands it on in the commit that ends it:
    tests/test_one_path.py.)"""
    from dataclasses import replace

    from aurora.engine import Engine

    worker = Engine(replace(runtime.settings, simulated_latency_ms=1), runtime.db, runtime.policies, runtime.secrets)
    worker._execute(run_id, "worker:1:dies")  # noqa: SLF001

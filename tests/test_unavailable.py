"""Honest errors: a stopped database or a full disk is a 503 that names the component and says when
to come back (``Retry-After``), never a 500; the broker down at submit still stores the run (201)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import free_port, missing, reachable

from aurora import keys
from aurora.config import load_settings
from aurora.db import forget
from aurora.migrations import upgrade
from aurora.models import Role
from aurora.runtime import Runtime, set_runtime

MAIL = "name: send_report\ngoal: send_email\npayload: {to: kunde@example.com, subject: Hi, template: monthly}\n"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


@contextlib.contextmanager
def private_postgres() -> Iterator[tuple[str, callable]]:
    """A PostgreSQL cluster of our own on a free port, so that the test may stop it."""
    if not (PG_BIN / "initdb").exists() or os.geteuid() != 0:
        missing("a private PostgreSQL cluster needs /usr/lib/postgresql/15/bin and root (to run it as postgres)")
    base = Path(tempfile.mkdtemp(prefix="aurora-pg-"))
    shutil.chown(base, "postgres")
    data, port = base / "data", free_port()

    def pg(*args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=60)

    pg(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    pg(str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "log"), "-o",
       f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop() -> None:
        if reachable("127.0.0.1", port):
            pg(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")

    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres", stop
    finally:
        stop()
        shutil.rmtree(base, ignore_errors=True)


def _runtime_on(env: dict[str, str], url: str) -> Runtime:
    rt = Runtime(load_settings({**env, "AURORA_DATABASE_URL": url}))
    upgrade(url)
    set_runtime(rt)
    return rt


def test_a_stopped_postgresql_is_a_503_naming_the_database_on_every_endpoint(env) -> None:
    from aurora.web import create_app

    with private_postgres() as (url, stop):
        try:
            runtime = _runtime_on(env, url)
            key = keys.create(runtime.db, "sam", Role.SUBMITTER)
            # a submitter is never asked to vote: its /approvals needs no database once its key is
            # cached (AURORA_KEY_CACHE_SECONDS), so the approver asks, whose list the database holds
            approver = keys.create(runtime.db, "alice", Role.APPROVER)
            client = create_app({"TESTING": True}).test_client()
            auth = {"Authorization": f"Bearer {key}"}
            created = client.post("/workflows", data=MAIL, headers={**auth, "Content-Type": "application/yaml"})
            assert created.status_code == 201, created.json
            stop()
            for method, path in (("POST", "/workflows"), ("GET", "/workflows"),
                                 ("GET", f"/workflows/{created.json['id']}"), ("GET", "/events"),
                                 ("GET", "/approvals")):
                caller = {"Authorization": f"Bearer {approver}"} if path == "/approvals" else auth
                response = client.open(path, method=method, data=MAIL if method == "POST" else None,
                                       headers={**caller, "Content-Type": "application/yaml"})
                assert response.status_code == 503, (path, response.json)
                assert response.json["error"] == "unavailable" and response.json["component"] == "database"
                assert int(response.headers["Retry-After"]) > 0
                assert "127.0.0.1" not in response.get_data(as_text=True)  # no driver text, no host
            health = client.get("/health")
            assert health.status_code == 503 and health.json["components"]["database"]["ok"] is False
        finally:
            set_runtime(None)
            forget(url)


@contextlib.contextmanager
def tiny_disk(size: str = "2M") -> Iterator[Path]:
    """A tmpfs of its own: filling it is a real ENOSPC for every process writing there."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        missing("a tmpfs mount needs root")
    mountpoint = Path(tempfile.mkdtemp(prefix="aurora-disk-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        missing(f"cannot mount a tmpfs: {done.stderr.strip()}")
    # The metrics files of this process stay on the real disk: a runtime made on the tiny disk would
    # point them there for the rest of the session (the subprocess test below covers metrics).
    # It stays set for the rest of the session: metric values made from here on write to files in
    # it, and removing it would leave them writing to deleted files that /metrics never reads.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="aurora-metrics-"))
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], check=False)  # a file still open: detach
        shutil.rmtree(mountpoint, ignore_errors=True)


def fill(folder: Path) -> Path:
    """Write a file until the disk refuses another byte."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (64 * 1024, 4096, 512, 1):
            while True:
                try:
                    os.write(fd, b"\0" * chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_is_a_503_naming_the_disk_and_nothing_half_stored(env) -> None:
    from aurora.web import create_app

    with tiny_disk() as disk:
        url = f"sqlite:///{disk / 'aurora.db'}"
        try:
            runtime = _runtime_on({**env, "AURORA_HOME": str(disk / "var")}, url)
            key = keys.create(runtime.db, "sam", Role.SUBMITTER)
            client = create_app({"TESTING": True}).test_client()
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/yaml"}
            assert client.post("/workflows", data=MAIL, headers=headers).status_code == 201
            # An empty WAL: the next commit must grow a file, as it would after a checkpoint.
            with contextlib.closing(sqlite3.connect(disk / "aurora.db")) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            filler = fill(disk)
            response = client.post("/workflows", data=MAIL, headers=headers)
            assert response.status_code == 503, response.json
            assert response.json["error"] == "unavailable" and response.json["component"] == "disk"
            assert int(response.headers["Retry-After"]) > 0
            assert str(disk) not in response.get_data(as_text=True)
            filler.unlink()
            again = client.post("/workflows", data=MAIL, headers=headers)
            assert again.status_code == 201, again.json
            listing = client.get("/workflows", headers=headers).json["runs"]
            assert len(listing) == 2  # the refused one left nothing behind
        finally:
            set_runtime(None)
            forget(url)


def test_the_broker_down_at_submit_still_stores_the_run(client, api_keys, runtime) -> None:
    runtime.settings = replace(runtime.settings, broker_url=f"redis://127.0.0.1:{free_port()}/0")
    response = client.post("/workflows", data=MAIL,
                           headers={**api_keys.header("submitter"), "Content-Type": "application/yaml"})
    assert response.status_code == 201 and "warning" in response.json


def test_a_bug_is_still_a_500_not_an_outage(client, api_keys, runtime) -> None:
    with runtime.db.write() as session:
        session.connection().exec_driver_sql("DROP TABLE events")
    response = client.get("/events", headers=api_keys.header("viewer"))
    assert response.status_code == 500 and response.json["error"] == "internal_error"


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_an_oserror_of_a_full_disk_is_the_disk(code: int) -> None:
    from aurora.web.unavailable import component_of

    try:
        try:
            raise OSError(code, os.strerror(code))
        except OSError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert component_of(outer) == "disk"
    assert component_of(OSError(errno.ENOENT, "no")) is None


def test_broker_errors_are_the_broker() -> None:
    from kombu.exceptions import OperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError

    from aurora.web.unavailable import component_of

    assert component_of(OperationalError("connection refused")) == "broker"
    assert component_of(RedisConnectionError("Error 111")) == "broker"
    assert component_of(ValueError("a bug")) is None


@pytest.mark.timeout(30)  # without a connect timeout it would hang here for good
def test_a_database_host_that_never_answers_is_a_503_within_seconds(env) -> None:
    import socket
    import time

    from aurora.db import PG_CONNECT_TIMEOUT
    from aurora.web import create_app

    # A listener that never accepts: the kernel completes the handshake, then nothing answers,
    # as with a hung server or a half-dead network path.
    with socket.create_server(("127.0.0.1", 0), backlog=64) as silent:
        url = f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/aurora"
        set_runtime(Runtime(load_settings({**env, "AURORA_DATABASE_URL": url})))
        try:
            client = create_app({"TESTING": True}).test_client()
            started = time.monotonic()
            response = client.get("/workflows", headers={"Authorization": "Bearer aur_0123456789ab_x"})
            assert response.status_code == 503 and response.json["component"] == "database"
            assert time.monotonic() - started < PG_CONNECT_TIMEOUT + 3
        finally:
            set_runtime(None)
            forget(url)


METRICS_ON_A_FULL_DISK = """
import sys
from pathlib import Path

sys.path.insert(0, sys.argv[2])
from test_unavailable import fill

from aurora import metrics

disk = Path(sys.argv[1])
metrics.prepare(disk / "metrics")
metrics.request_done("GET", "/first", 200, 0.01)  # the files exist, with room for a few entries
fill(disk)
for i in range(2000):  # each a new entry: the files must grow
    metrics.request_done("GET", f"/endpoint/{i}", 200, 0.01)
    metrics.run_finished("send_email", f"status{i}", 1.0)
print("still alive")
"""


def test_metrics_on_a_full_disk_are_not_counted_instead_of_killing_the_process() -> None:
    import sys

    with tiny_disk("1M") as disk:
        done = subprocess.run([sys.executable, "-c", METRICS_ON_A_FULL_DISK, str(disk), str(Path(__file__).parent)],
                              capture_output=True, text=True, timeout=60,
                              env={k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"})
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])  # -7 was SIGBUS
    assert "still alive" in done.stdout and "a metric was not counted: ENOSPC" in done.stderr

"""``aurora submit`` sends one Idempotency-Key per invocation and tries again after a connection
reset: the server made the run before the answer was lost, and the retry finds it."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import free_port
from sqlalchemy import func, select
from werkzeug.serving import make_server

from aurora.cli import main
from aurora.models import Run

MAIL = "name: send_report\ngoal: send_email\npayload: {to: kunde@example.com, subject: Hi, template: monthly}\n"


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


class ResettingProxy:
    """Forwards each request to the app; for the first ``resets`` of them it throws the answer
    away and resets the client's connection (RST), as a dying load balancer would."""

    def __init__(self, upstream: int, resets: int):
        self.upstream, self.resets = upstream, resets
        self.requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            request = _read_request(conn)
            if not request:
                return
            head, _, body = request.partition(b"\r\n\r\n")
            lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
            request = b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + body
            self.requests.append(request)
            with socket.create_connection(("127.0.0.1", self.upstream)) as up:
                up.sendall(request)
                answer = b""
                while chunk := up.recv(65536):
                    answer += chunk
            if len(self.requests) <= self.resets:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return  # closing with linger 0 sends RST: the client sees "connection reset"
            conn.sendall(answer)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def served(app: Any) -> Iterator[int]:
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield port
    server.shutdown()


def _runs(runtime: Any) -> int:
    with runtime.db.read() as session:
        return session.scalar(select(func.count()).select_from(Run))


def test_submit_retries_a_reset_connection_with_the_same_key_and_makes_one_run(
        served, api_keys, runtime, tmp_path, monkeypatch) -> None:
    import aurora.client

    monkeypatch.setattr(aurora.client.Client, "backoff", 0.05, raising=False)
    proxy = ResettingProxy(served, resets=1)
    workflow = tmp_path / "mail.yaml"
    workflow.write_text(MAIL)
    env = {"AURORA_URL": f"http://127.0.0.1:{proxy.port}", "AURORA_TOKEN": api_keys.submitter,
           "AURORA_CLI_CONFIG": str(tmp_path / "cli.json")}
    try:
        done = CliRunner().invoke(main, ["submit", str(workflow), "--json"], env=env)
        assert done.exit_code == 0, done.output
        assert '"status": "queued"' in done.output
        assert len(proxy.requests) == 2 and _runs(runtime) == 1
        keys = [line for r in proxy.requests for line in r.split(b"\r\n") if line.startswith(b"Idempotency-Key:")]
        assert len(keys) == 2 and keys[0] == keys[1]
        # A new invocation is a new submission, with a key of its own.
        again = CliRunner().invoke(main, ["submit", str(workflow), "--json"], env=env)
        assert again.exit_code == 0, again.output
        assert _runs(runtime) == 2
        third = [line for line in proxy.requests[-1].split(b"\r\n") if line.startswith(b"Idempotency-Key:")]
        assert third != keys[:1]
    finally:
        proxy.close()


def _serve(app: Any, port: int) -> Any:
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _outage(runtime: Any, server: Any, then: Any) -> threading.Thread:
    """Once the run is submitted, Aurora goes away (the port refuses connections); ``then()`` after
    longer than the client's own tries of one request."""
    def run() -> None:
        while True:
            with runtime.db.read() as session:
                if session.scalar(select(func.count()).select_from(Run)):
                    break
            time.sleep(0.02)
        server.shutdown()
        server.server_close()
        time.sleep(5)
        then()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _wait(port: int, token: str, tmp_path: Any, timeout: str) -> Any:
    workflow = tmp_path / "mail.yaml"
    workflow.write_text(MAIL)
    env = {"AURORA_URL": f"http://127.0.0.1:{port}", "AURORA_TOKEN": token, "AURORA_CLI_CONFIG": str(tmp_path / "c")}
    return CliRunner().invoke(main, ["submit", str(workflow), "--wait", "--timeout", timeout], env=env)


def test_submit_wait_follows_the_run_again_after_a_lost_connection(app, runtime, api_keys, tmp_path) -> None:
    port = free_port()
    servers = [_serve(app, port)]

    def back() -> None:
        with runtime.db.read() as session:
            run_id = session.scalar(select(Run.id))
        runtime.engine.execute(run_id)  # it went on while nobody watched
        servers.append(_serve(app, port))

    outage = _outage(runtime, servers[0], back)
    done = _wait(port, api_keys.submitter, tmp_path, "60")
    outage.join(10)
    servers[-1].shutdown()
    assert done.exit_code == 5, done.output  # succeeded simulated (the shipped policy is a dry run)
    assert "connection lost" in done.output and "SUCCEEDED SIMULATED" in done.output


def test_submit_wait_that_never_gets_through_again_says_unknown_not_failed(app, runtime, api_keys, tmp_path) -> None:
    port = free_port()
    outage = _outage(runtime, _serve(app, port), lambda: None)
    done = _wait(port, api_keys.submitter, tmp_path, "8")
    outage.join(10)
    with runtime.db.read() as session:
        run_id = session.scalar(select(Run.id))
    assert done.exit_code == 7, done.output  # not known: not "failed" (1)
    assert run_id in done.output and f"aurora status {run_id}" in done.output

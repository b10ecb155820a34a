"""Waiting for a run without polling, through the real stack (gunicorn with Aurora's uvicorn
worker, Celery workers, SQLite + filesystem broker or Redis, PostgreSQL): ``Prefer: wait`` on
submit, ``?wait`` long polls, the server-sent-event stream, timeouts, and what waiters hold."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import ROOT, descendants

REPORT = (ROOT / "workflows" / "send_report.yaml").read_bytes()
CHARGE = {"name": "pay", "goal": "charge", "payload": {"customer": "cus_9", "amount": "42.50", "currency": "EUR",
                                                       "payment_method": "pm_1"}}


@pytest.fixture(params=["embedded", "redis"])
def stack(request, make_stack) -> Any:
    """A booted stack on the embedded default (SQLite + filesystem broker) or on Redis."""
    if request.param == "redis":
        built = make_stack(broker_url=request.getfixturevalue("redis_url"))
    else:
        built = make_stack()
    return built.boot()


def _submit(stack, headers: dict[str, str] | None = None, path: str = "/workflows", body: bytes = REPORT,
            timeout: float = 30) -> requests.Response:
    return requests.post(stack.url + path, data=body, timeout=timeout,
                         headers={"Authorization": f"Bearer {stack.keys['admin']}",
                                  "Content-Type": "application/yaml", **(headers or {})})


def _events(response: requests.Response) -> list[tuple[str, dict[str, Any] | None]]:
    """(event name, data) of each server-sent event, read as they come until the stream ends."""
    found: list[tuple[str, dict[str, Any] | None]] = []
    name, data = None, None
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif line == "" and name:
            found.append((name, data))
            name, data = None, None
    return found


def test_prefer_wait_answers_with_the_final_state(stack) -> None:
    started = time.monotonic()
    response = _submit(stack, {"Prefer": "wait=30"})
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["status"] == "succeeded", run
    assert run["result"]["dry_run"] is True and run["finished_at"]
    assert response.headers["Preference-Applied"] == "wait=30"
    assert response.headers["Location"] == f"/workflows/{run['id']}"
    assert time.monotonic() - started < 10  # a note woke it, not the 20 s re-read
    # the documented query form does the same
    queried = _submit(stack, path="/workflows?wait=30")
    assert queried.status_code == 201 and queried.json()["status"] == "succeeded"
    assert "Preference-Applied" not in queried.headers
    # a wait beyond the cap is cut to it, and the answer says so
    capped = _submit(stack, {"Prefer": "wait=100000"})
    assert capped.json()["status"] == "succeeded" and capped.headers["Preference-Applied"] == "wait=60"


def test_prefer_wait_stops_when_the_run_waits_for_approval(stack) -> None:
    response = _submit(stack, {"Prefer": "respond-async, wait=30", "Content-Type": "application/json"},
                       body=json.dumps(CHARGE).encode())
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "awaiting_approval"
    assert response.headers["Preference-Applied"] == "wait=30"


def test_get_wait_long_polls_for_the_next_change(stack) -> None:
    run_id = _submit(stack, {"Prefer": "wait=30", "Content-Type": "application/json"},
                     body=json.dumps(CHARGE).encode()).json()["id"]
    first = stack.http("GET", f"/workflows/{run_id}?wait=0")
    assert first.status_code == 200 and first.json()["status"] == "awaiting_approval"
    etag = first.headers["ETag"]
    threading.Timer(1.0, lambda: stack.http("POST", f"/workflows/{run_id}/cancel")).start()
    started = time.monotonic()
    changed = stack.http("GET", f"/workflows/{run_id}?wait=30", headers={"If-None-Match": etag})
    waited = time.monotonic() - started
    assert changed.status_code == 200 and changed.json()["status"] == "cancelled", changed.text
    assert 0.8 < waited < 15, waited
    assert changed.headers["ETag"] != etag
    # a final run does not change again: the answer comes at once
    started = time.monotonic()
    assert stack.http("GET", f"/workflows/{run_id}?wait=30").json()["status"] == "cancelled"
    assert time.monotonic() - started < 5
    # a wait that is not a number is a 400 saying so
    bad = stack.http("GET", f"/workflows/{run_id}?wait=soon")
    assert bad.status_code == 400 and "wait" in bad.json()["message"]


def test_the_stream_delivers_events_in_order_and_ends_at_a_final_status(stack) -> None:
    run_id = _submit(stack, {"Prefer": "wait=30", "Content-Type": "application/json"},
                     body=json.dumps(CHARGE).encode()).json()["id"]
    seen: list[tuple[str, dict[str, Any] | None]] = []
    opened = threading.Event()

    def follow() -> None:
        with requests.get(f"{stack.url}/workflows/{run_id}/stream", stream=True, timeout=40,
                          headers={"Authorization": f"Bearer {stack.keys['admin']}"}) as response:
            assert response.status_code == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            assert "Aurora-Follow" not in response.headers
            opened.set()
            seen.extend(_events(response))

    reader = threading.Thread(target=follow)
    reader.start()
    assert opened.wait(15)
    time.sleep(0.5)  # the stream is open and idle before the run changes
    assert stack.http("POST", f"/workflows/{run_id}/cancel").json()["status"] == "cancelled"
    reader.join(30)
    assert not reader.is_alive(), "the stream did not end at the final status"
    names = [name for name, _ in seen]
    assert names[0] == "run.queued" and "run.awaiting_approval" in names
    assert names[-2:] == ["run.cancelled", "end"], names
    seqs = [data["seq"] for name, data in seen if name != "end"]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert seen[-1][1] == {"id": run_id, "status": "cancelled"}
    # resuming after the last event id sends only what came after it
    resumed = stack.http("GET", f"/workflows/{run_id}/stream", headers={"Last-Event-ID": str(seqs[-2])})
    assert [line for line in resumed.text.splitlines() if line.startswith("event:")] == \
        ["event: run.cancelled", "event: end"]


def test_a_waiter_times_out_cleanly_with_the_current_state(make_stack) -> None:
    stack = make_stack().boot(workers=False)  # nothing runs the run: it stays queued
    started = time.monotonic()
    response = _submit(stack, {"Prefer": "wait=1"})
    waited = time.monotonic() - started
    assert response.status_code == 201 and response.json()["status"] == "queued", response.text
    assert response.headers["Preference-Applied"] == "wait=1"
    assert 0.9 < waited < 8, waited
    run_id = response.json()["id"]
    started = time.monotonic()
    polled = stack.http("GET", f"/workflows/{run_id}?wait=1")
    assert polled.status_code == 200 and polled.json()["status"] == "queued"
    assert 0.9 < time.monotonic() - started < 8


def _web_worker(stack) -> int:
    """The pid of the gunicorn worker (the one process below the web's master)."""
    [pid] = [p for p, cmd in descendants(stack.procs["web"].pid).items() if "gunicorn_main" in cmd]
    return pid


def _threads(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def _tcp_ports(pid: int) -> set[int]:
    """The local ports of the TCP connections process ``pid`` holds (its sockets' inodes, looked up
    in the kernel's tables)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


#: how long each of the fifty waits (s): long enough that every submit is in, and its waiter
#: waiting, before the first one's time is up (under load fifty submits took seconds)
FIFTY_WAIT = 15


@pytest.mark.parametrize("backend", ["embedded", "postgres+redis"])
def test_fifty_waiters_hold_no_database_connection_and_no_thread(make_stack, request, backend) -> None:
    if backend == "embedded":
        stack = make_stack()
    else:
        stack = make_stack(database_url=request.getfixturevalue("postgres_url"),
                           broker_url=request.getfixturevalue("redis_url"))
    stack.boot(workers=False)
    worker = _web_worker(stack)
    stack.http("GET", "/workflows")  # the thread pool and the pool's connections exist
    threads_before = _threads(worker)
    waiters = 50
    with ThreadPoolExecutor(waiters) as pool:
        started = time.monotonic()
        futures = [pool.submit(_submit, stack, {"Prefer": f"wait={FIFTY_WAIT}"}, timeout=60) for _ in range(waiters)]
        # Every waiter is waiting once every run is stored (nothing runs them): not after a fixed
        # sleep, which a loaded machine outlasted with submits still in Flask (and so, rightly,
        # holding a connection). A moment more for the last submits' answers to leave Flask.
        while len(stack.http("GET", f"/workflows?limit={waiters}").json()["runs"]) < waiters:
            assert time.monotonic() - started < FIFTY_WAIT - 3, "fifty submits took most of their wait"
            time.sleep(0.1)
        time.sleep(0.5)
        assert not any(f.done() for f in futures)
        threads_waiting = _threads(worker)
        if backend != "embedded":
            import psycopg

            # The web worker's connections only: the system worker and beat (the sweeper, every
            # 0.5 s here) rightly use theirs, and PostgreSQL's own (autovacuum) are no client's.
            ports = list(_tcp_ports(worker))
            with psycopg.connect(stack.env["AURORA_DATABASE_URL"], autocommit=True) as conn:
                rows = conn.execute("SELECT state, count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                    " AND pid <> pg_backend_pid() AND client_port = ANY(%s) GROUP BY state",
                                    [ports]).fetchall()
            states = dict(rows)
            assert states, "no connection of the web worker found in pg_stat_activity"
            # checked-out connections would show as active or idle in transaction
            assert not states.get("idle in transaction") and not states.get("active"), states
            assert sum(states.values()) <= 15, states  # the web's pool (5 + 10 overflow) at most
        assert time.monotonic() - started < FIFTY_WAIT, "the checks above came after the waits ended"
        answers = [f.result() for f in futures]
        elapsed = time.monotonic() - started
    assert all(a.status_code == 201 and a.json()["status"] == "queued" for a in answers)
    assert elapsed < FIFTY_WAIT + 25
    # the thread pool is Flask's (8), not one per waiter
    assert threads_waiting <= threads_before + 8, (threads_before, threads_waiting)


def test_a_long_poll_is_answered_at_once_when_aurora_serve_stops(make_stack) -> None:
    # gunicorn's worker runs the same protocol: its graceful stop answers waiters too, instead of
    # letting them hang for the graceful time and then dropping them
    import signal

    stack = make_stack().boot(workers=False)
    run_id = _submit(stack, {"Content-Type": "application/json"}, body=json.dumps(CHARGE).encode()).json()["id"]
    etag = stack.http("GET", f"/workflows/{run_id}?wait=0").headers["ETag"]  # queued: no worker runs it
    with ThreadPoolExecutor(1) as pool:
        poll = pool.submit(requests.get, f"{stack.url}/workflows/{run_id}?wait=60", timeout=90,
                           headers={"Authorization": f"Bearer {stack.keys['admin']}", "If-None-Match": etag})
        time.sleep(1.5)
        started = time.monotonic()
        stack.procs["web"].send_signal(signal.SIGTERM)
        answer = poll.result(timeout=30)
        assert time.monotonic() - started < 5
    assert answer.status_code == 200 and answer.json()["status"] == "queued", answer.text
    assert answer.headers["ETag"] == etag


def half_sent_submit(stack, stop: Any) -> tuple[bytes, float]:
    """A ``Prefer: wait`` submit whose body is still on its way when ``stop()`` is called — to a
    web that has had no waiting request yet (a fresh worker): the answer's bytes, and the seconds
    from the stop to the answer's end."""
    import socket

    body = json.dumps(CHARGE).encode()
    head = (f"POST /workflows HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {stack.keys['admin']}\r\n"
            f"Content-Type: application/json\r\nPrefer: wait=60\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", stack.port)) as sock:
        sock.sendall(head + body[:10])
        time.sleep(1.0)
        started = time.monotonic()
        stop()
        time.sleep(0.5)
        sock.sendall(body[10:])
        sock.settimeout(40)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data, time.monotonic() - started


def test_a_first_submitter_still_sending_is_answered_when_aurora_serve_stops(make_stack) -> None:
    # the stop reached the app before its first waiter did: it must still not wait (before, the
    # run was accepted and its submitter got nothing, cut off after the graceful time)
    import signal

    stack = make_stack().boot(workers=False)
    data, took = half_sent_submit(stack, lambda: stack.procs["web"].send_signal(signal.SIGTERM))
    assert data.startswith(b"HTTP/1.1 201"), (took, data[:300])
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["status"] == "queued"
    assert took < 5, took


def test_the_stop_of_one_server_leaves_another_app_in_the_process_waiting(make_stack) -> None:
    # two servers in one process (a test, an embedding): the stop of one is not the other's
    import uvicorn
    from conftest import free_port

    from aurora.config import load_settings
    from aurora.runtime import Runtime, set_runtime
    from aurora.web import create_app
    from aurora.web.asgi import WaitingApp
    from aurora.web.server import SERVER_SETTINGS

    stack = make_stack()
    stack.aurora("db", "upgrade")
    key = stack.aurora("keys", "create", "admin", "--role", "admin").stdout.strip()
    set_runtime(Runtime(load_settings(stack.env)))
    try:
        flask = create_app()
        apps = {name: WaitingApp(flask, threads=2) for name in "AB"}
        ports = {name: free_port() for name in "AB"}
        servers = {name: uvicorn.Server(uvicorn.Config(apps[name], port=ports[name], log_level="warning",
                                                       **SERVER_SETTINGS)) for name in "AB"}
        threads = {name: threading.Thread(target=servers[name].run, daemon=True) for name in "AB"}
        for thread in threads.values():
            thread.start()
        while not all(server.started for server in servers.values()):
            time.sleep(0.05)
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        url = {name: f"http://127.0.0.1:{ports[name]}" for name in "AB"}
        run = requests.post(f"{url['B']}/workflows", data=json.dumps(CHARGE), headers=headers, timeout=10).json()
        etag = requests.get(f"{url['A']}/workflows/{run['id']}?wait=0", headers=headers, timeout=10).headers["ETag"]
        headers["If-None-Match"] = etag
        requests.get(f"{url['B']}/workflows/{run['id']}?wait=1", headers=headers, timeout=10)  # B has waited too
        with ThreadPoolExecutor(2) as pool:
            on_a = pool.submit(requests.get, f"{url['A']}/workflows/{run['id']}?wait=30", headers=headers, timeout=60)
            time.sleep(1.0)  # A has a waiter when it stops
            servers["A"].should_exit = True
            threads["A"].join(10)
            assert on_a.result(10).status_code == 200
            started = time.monotonic()
            requests.get(f"{url['B']}/workflows/{run['id']}?wait=2", headers=headers, timeout=10)
            waited = time.monotonic() - started
        servers["B"].should_exit = True
        threads["B"].join(10)
        assert apps["A"].stopping and not apps["B"].stopping
        assert waited > 1.5, waited  # B's long poll waited its time: nothing changed the run
    finally:
        set_runtime(None)


def _behind_a_proxy(make_stack) -> tuple[Any, str, Any, Any]:
    """A web (no worker) with a run that waits, a TCP proxy in front of it (tests/pgproxy.py),
    and a client through the proxy that tries again soon."""
    from pgproxy import Proxy

    from aurora.client import Client

    stack = make_stack().boot(workers=False)
    run_id = _submit(stack, {"Content-Type": "application/json"}, body=json.dumps(CHARGE).encode()).json()["id"]
    proxy = Proxy("127.0.0.1", stack.port)
    client = Client(f"http://127.0.0.1:{proxy.port}", stack.keys["admin"])
    client.backoff = 0.1
    return stack, run_id, proxy, client


def test_client_wait_resumes_when_the_server_goes_right_after_an_event(make_stack) -> None:
    # The stream delivers an event, and the read of the run that follows finds no server (a web
    # that stopped right after it, and takes longer to come back than one request's own tries):
    # `aurora submit --wait` must go on, and see the run to its end (before: ClientError).
    stack, run_id, proxy, client = _behind_a_proxy(make_stack)
    lost: list[Exception] = []
    try:
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(client.wait, run_id, 60, lambda run: run["status"] == "cancelled",
                                  None, lost.append)
            time.sleep(1.5)  # it follows the run's stream now
            proxy.refusing = True  # no new connection: the stream that is open goes on
            assert stack.http("POST", f"/workflows/{run_id}/cancel").status_code == 200
            time.sleep(5)  # longer than one request's own tries (0.1 + 0.2 + 0.4 s here)
            proxy.refusing = False
            run = waiting.result(timeout=40)
    finally:
        proxy.close()
    assert run["status"] == "cancelled", run
    assert lost, "the outage was never reported"


def test_client_wait_keeps_its_deadline_when_the_read_after_an_event_is_never_answered(make_stack) -> None:
    # A web that froze right after an event: the read of the run that follows is accepted and
    # never answered. Client.wait must end at its deadline, not after one request's own tries
    # (4 x its 30 s timeout).
    stack, run_id, proxy, client = _behind_a_proxy(make_stack)
    try:
        with ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            waiting = pool.submit(client.wait, run_id, 5, lambda run: run["status"] == "succeeded")
            time.sleep(1.5)
            proxy.stalling = True
            assert stack.http("POST", f"/workflows/{run_id}/cancel").status_code == 200
            run = waiting.result(timeout=150)
            took = time.monotonic() - started
    finally:
        proxy.close()
    assert took < 5 + 2, took
    assert run["status"] != "succeeded"  # what it had read: the deadline passed before any other

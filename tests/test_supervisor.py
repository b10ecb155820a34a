"""``aurora up`` as a supervisor, with real processes: it drains on SIGTERM, stops an idle stack
quickly, refuses to start beside another stack, restarts a child that died, and takes its children
with it when it is killed."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import ROOT, descendants, free_port, reachable

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the supervisor's guarantees are Linux's")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_up(make_stack, *options: str, **extra: str):
    """``aurora up`` on two free ports; returns the stack with its admin key, once healthy."""
    stack = make_stack(**extra)
    stack.ports = [free_port(), free_port()]
    stack.port = stack.ports[0]
    stack.start("up", "up", "--port", str(stack.ports[0]), "--port", str(stack.ports[1]), *options)
    stack.read_first_key()
    stack.wait_healthy()
    return stack


def children_named(stack, needle: str, exclude: str = "\0") -> list[int]:
    """The supervisor's own children (not theirs) whose command line has ``needle``."""
    up = stack.procs["up"].pid
    direct = {int(p) for p in Path(f"/proc/{up}/task/{up}/children").read_text().split()}
    return [pid for pid, cmd in descendants(up).items() if pid in direct and needle in cmd and exclude not in cmd]


def submit(stack, name: str = "send_report") -> str:
    body = (ROOT / "workflows" / f"{name}.yaml").read_bytes()
    response = stack.http("POST", "/workflows", data=body, headers={"Content-Type": "application/yaml"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def awaiting_approval(stack) -> tuple[dict, str]:
    """A run that waits for approval (nothing will change it), and its ETag."""
    charge = json.dumps({"name": "pay", "goal": "charge", "payload": {
        "customer": "cus_9", "amount": "42.50", "currency": "EUR", "payment_method": "pm_1"}})
    run = stack.http("POST", "/workflows", data=charge,
                     headers={"Content-Type": "application/json", "Prefer": "wait=30"}).json()
    assert run["status"] == "awaiting_approval", run
    return run, stack.http("GET", f"/workflows/{run['id']}?wait=0").headers["ETag"]


def stop_up(stack, timeout: float = 30) -> float:
    """SIGTERM to the ``aurora up`` process alone; seconds until it exited."""
    proc = stack.procs.pop("up")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=timeout)
    return time.monotonic() - started


def test_sigterm_lets_the_run_in_flight_finish(make_stack) -> None:
    stack = start_up(make_stack, AURORA_SIMULATED_LATENCY_MS="3000")
    run_id = submit(stack)
    deadline = time.monotonic() + 20
    run = stack.http("GET", f"/workflows/{run_id}").json()
    while not (run["status"] == "running" and run.get("step") == "act") and time.monotonic() < deadline:
        time.sleep(0.05)
        run = stack.http("GET", f"/workflows/{run_id}").json()
    assert run["status"] == "running" and run["step"] == "act", run  # inside the 3 s simulated call
    stop_up(stack)
    database = stack.env["AURORA_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(database) as db:
        status = db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
    assert status == "succeeded", stack.log("up")[-3000:]
    assert "Warm shutdown" in stack.up_logs()  # the worker's own line, in its log file


def test_an_idle_stack_stops_in_under_three_seconds_and_leaves_nothing(make_stack) -> None:
    stack = start_up(make_stack)
    pids = descendants(stack.procs["up"].pid)
    assert any("aurora worker --system" in cmd for cmd in pids.values()), pids  # the fourth child
    took = stop_up(stack)
    assert took < 3, f"stopping took {took:.1f} s\n" + stack.log("up")[-3000:]
    assert not [pid for pid in pids if alive(pid)]
    assert not any(reachable("127.0.0.1", port) for port in stack.ports)


def test_a_stopping_stack_answers_its_waiters_at_once_and_ends_their_streams(make_stack) -> None:
    # A long poll and an event stream of a run that waits for approval (nothing will change it):
    # the stop must not sit out the web's graceful time for them and then cut them off.
    stack = start_up(make_stack)
    run, etag = awaiting_approval(stack)
    answers: dict[str, Any] = {}
    auth = {"Authorization": f"Bearer {stack.keys['admin']}"}

    def poll() -> None:
        answers["poll"] = requests.get(f"{stack.url}/workflows/{run['id']}?wait=60", timeout=90,
                                       headers={**auth, "If-None-Match": etag})

    def follow() -> None:
        with requests.get(f"{stack.url}/workflows/{run['id']}/stream", stream=True, timeout=90, headers=auth) as got:
            answers["stream"] = got.text  # read to its end: an error here if it was cut off

    waiters = [threading.Thread(target=poll), threading.Thread(target=follow)]
    for waiter in waiters:
        waiter.start()
    time.sleep(1.5)  # both are waiting now
    took = stop_up(stack)
    for waiter in waiters:
        waiter.join(10)
    assert took < 6, f"stopping took {took:.1f} s\n" + stack.up_logs()[-3000:]
    assert answers["poll"].status_code == 200 and answers["poll"].json()["status"] == "awaiting_approval"
    assert "event: run.awaiting_approval" in answers["stream"]
    assert "graceful shutdown exceeded" not in stack.up_logs() + stack.log("up")


def test_a_first_submitter_still_sending_is_answered_when_aurora_up_stops(make_stack) -> None:
    from test_waiting import half_sent_submit

    stack = start_up(make_stack)
    data, took = half_sent_submit(stack, lambda: stack.procs["up"].send_signal(signal.SIGTERM))
    stack.procs.pop("up").wait(30)
    assert data.startswith(b"HTTP/1.1 201"), (took, data[:300])
    assert took < 5, took
    assert "graceful shutdown exceeded" not in stack.up_logs()


def test_two_thousand_waiters_are_all_answered_at_once_when_aurora_up_stops(make_stack) -> None:
    # A stop that asked Flask for each waiter's run (~200 a second here) outlasted the web's
    # graceful time beyond ~1,500 waiters, and cut the rest off.
    from concurrent.futures import ThreadPoolExecutor

    n = 2000
    stack = start_up(make_stack)
    auth = {"Authorization": f"Bearer {stack.keys['admin']}"}
    run, etag = awaiting_approval(stack)

    def wait(i: int) -> str:
        try:
            if i % 3 == 0:
                with requests.get(f"{stack.url}/workflows/{run['id']}/stream", stream=True, timeout=90,
                                  headers=auth) as got:
                    return "ok" if "event: run.awaiting_approval" in got.text else "no events"
            got = requests.get(f"{stack.url}/workflows/{run['id']}?wait=60", timeout=90,
                               headers={**auth, "If-None-Match": etag})
            return "ok" if got.status_code == 200 and got.headers["ETag"] == etag else str(got.status_code)
        except requests.RequestException as exc:
            return exc.__class__.__name__

    with ThreadPoolExecutor(n) as pool:
        answers = [pool.submit(wait, i) for i in range(n)]
        deadline = time.monotonic() + 90
        while stack.up_logs().count(f"GET /workflows/{run['id']}") < n + 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2)  # every one of them waits now
        took = stop_up(stack, timeout=60)
        outcomes = [answer.result(120) for answer in answers]
    failed = [outcome for outcome in outcomes if outcome != "ok"]
    assert not failed, (len(failed), sorted(set(failed)))
    assert took < 8, f"stopping took {took:.1f} s"
    assert "graceful shutdown exceeded" not in stack.up_logs()


def test_a_taken_port_or_a_running_stack_on_the_same_home_starts_and_clears_nothing(make_stack) -> None:
    stack = make_stack()
    home = Path(stack.env["AURORA_HOME"])
    (home / "metrics").mkdir(parents=True)
    (home / "metrics" / "counter_1.db").write_text("the other stack's counters")
    taken, free = free_port(), free_port()
    import socket

    with socket.socket() as other:
        other.bind(("127.0.0.1", taken))
        other.listen()
        up = stack.aurora("up", "--port", str(free), "--port", str(taken), check=False)
    assert up.returncode == 2, up.stdout + up.stderr
    assert f"port {taken} on 127.0.0.1 is already in use" in up.stderr and "--port" in up.stderr
    assert "Traceback" not in up.stderr
    assert (home / "metrics" / "counter_1.db").read_text() == "the other stack's counters"
    assert not Path(stack.env["AURORA_DATABASE_URL"].removeprefix("sqlite:///")).exists()  # not even migrated
    assert not (home / "broker").exists() and not list(home.glob("celerybeat-schedule*"))

    with open(home / "up.lock", "w") as lock:  # what a running `aurora up` holds
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write("4242\n")
        lock.flush()
        up = stack.aurora("up", "--port", str(free_port()), check=False)
    assert up.returncode == 2, up.stdout + up.stderr
    assert "another `aurora up` (pid 4242) is running" in up.stderr
    assert (home / "metrics" / "counter_1.db").exists()


def test_a_killed_worker_is_restarted_and_the_stack_keeps_working(make_stack) -> None:
    stack = start_up(make_stack)
    [worker] = children_named(stack, "aurora worker", exclude="--system")
    os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while "restarting it" not in stack.log("up") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert re.search(rf"aurora: worker \(pid {worker}\) was killed by signal 9; restarting it in 0\.5 s "
                     r"\(restart 1\)", stack.log("up")), stack.log("up")[-3000:]
    run_id = submit(stack)
    assert stack.wait_status(run_id, {"succeeded", "failed"}, timeout=60)["status"] == "succeeded"
    assert children_named(stack, "aurora worker", exclude="--system") != [worker]
    metrics = stack.http("GET", "/metrics").text
    assert 'aurora_supervisor_restarts_total{process="worker"} 1.0' in metrics


def test_a_killed_web_is_restarted_and_no_connection_is_refused_meanwhile(make_stack) -> None:
    # The supervisor holds the listening sockets (no gunicorn master under it): a request made
    # while no web process runs waits in the kernel's queue and is answered by the next one.
    stack = start_up(make_stack)
    [web] = children_named(stack, "aurora.web.server")
    os.kill(web, signal.SIGKILL)
    answers = [requests.get(f"http://127.0.0.1:{port}/health/live", timeout=30).status_code
               for port in stack.ports for _ in range(3)]
    assert answers == [200] * 6
    assert re.search(rf"aurora: web \(pid {web}\) was killed by signal 9; restarting it", stack.log("up"))
    [again] = children_named(stack, "aurora.web.server")
    assert again != web


def test_a_web_whose_event_loop_is_stuck_is_killed_and_started_again(make_stack) -> None:
    # gunicorn's worker timeout, kept by the supervisor: the event loop beats on a file; one that
    # stops beating (here: the whole process stopped) is killed after --web-timeout seconds.
    stack = start_up(make_stack, "--web-timeout", "10")
    [web] = children_named(stack, "aurora.web.server")
    time.sleep(11)  # a web that beats is left alone past its timeout
    assert children_named(stack, "aurora.web.server") == [web]
    assert "no sign of life" not in stack.log("up")
    os.kill(web, signal.SIGSTOP)
    deadline = time.monotonic() + 30
    while "restarting it" not in stack.log("up") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert re.search(rf"aurora: web \(pid {web}\) gave no sign of life for 1[0-3] s \(its event loop is stuck\): "
                     "killing it", stack.log("up")), stack.log("up")[-2000:]
    assert requests.get(f"http://127.0.0.1:{stack.port}/health/live", timeout=30).status_code == 200
    assert children_named(stack, "aurora.web.server") not in ([], [web])


def test_a_stopping_stack_refuses_connections_and_a_stuck_web_does_not_hold_the_stop(make_stack) -> None:
    # The supervisor closes its listening sockets when the stop begins (as gunicorn's master did):
    # a client is refused at once instead of queueing for as long as a run in flight takes. A web
    # that is stuck gets its graceful time and a little more, not the run lease (60 s here).
    stack = start_up(make_stack)
    [worker] = children_named(stack, "aurora worker", exclude="--system")
    [web] = children_named(stack, "aurora.web.server")
    os.kill(worker, signal.SIGSTOP)  # stands in for a run in flight: the stop must wait for it
    os.kill(web, signal.SIGSTOP)
    proc = stack.procs.pop("up")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        deadline = time.monotonic() + 40
        while alive(web) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(web)
        assert 14 < time.monotonic() - started < 25, time.monotonic() - started
        for port in stack.ports:  # no web left, and the supervisor's own sockets are closed
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
        assert alive(worker) and proc.poll() is None  # the run in flight keeps its time
    finally:
        os.kill(worker, signal.SIGCONT)
    proc.wait(timeout=30)
    assert "stopping at once: web\n" in stack.log("up") and "stopping at once: worker" not in stack.log("up")


def test_a_web_orphaned_with_a_stuck_event_loop_leaves_on_its_own(tmp_path) -> None:
    # When the supervisor dies, its web gets SIGTERM, which a stuck event loop never acts on:
    # the web's own watch exits hard after the graceful time, so no orphan keeps the ports.
    script = (
        "import os, signal, socket, subprocess, sys, time\n"
        "listener = socket.create_server(('127.0.0.1', 0))\n"
        "print(listener.getsockname()[1], flush=True)\n"
        "if os.fork() == 0:\n"
        "    from aurora.web import server\n"
        "    server.GRACEFUL_SECONDS = 1\n"
        "    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the stuck loop: the signal changes nothing\n"
        "    import threading\n"
        "    threading.Thread(target=server._leave_when_orphaned, args=(os.getppid(),)).start()\n"
        "    print(os.getpid(), flush=True)\n"
        "    time.sleep(600)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        port = int(parent.stdout.readline())
        web = int(parent.stdout.readline())
        parent.kill()  # the supervisor, gone without a word
        parent.wait()
        assert alive(web) and reachable("127.0.0.1", port)
        deadline = time.monotonic() + 20
        while alive(web) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(web) and not reachable("127.0.0.1", port)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(web, signal.SIGKILL)


def test_a_killed_supervisor_takes_its_children_with_it(make_stack) -> None:
    stack = start_up(make_stack)
    pids = descendants(stack.procs["up"].pid)
    assert len([cmd for cmd in pids.values() if "-m aurora" in cmd or "gunicorn" in cmd]) >= 4, pids
    stack.kill("up")  # SIGKILL: no handler runs in the supervisor
    deadline = time.monotonic() + 15
    while (any(alive(pid) for pid in pids) or any(reachable("127.0.0.1", p) for p in stack.ports)) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [cmd for pid, cmd in pids.items() if alive(pid)]
    assert not any(reachable("127.0.0.1", port) for port in stack.ports)


def test_the_supervisor_gives_up_on_a_child_that_keeps_failing() -> None:
    script = (
        "import sys\n"
        "from aurora import stack\n"
        "stack.RESTART_DELAY = 0.01\n"
        "code = stack.run_stack({'ok': [sys.executable, '-c', 'import time; time.sleep(60)'],"
        " 'broken': [sys.executable, '-c', 'raise SystemExit(3)']})\n"
        "sys.exit(code)\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1, done.stderr
    assert time.monotonic() - started < 10  # the healthy child was stopped, not waited for
    assert done.stderr.count("broken (pid") == 5
    assert "exited 5 times within 60 s, so it is not restarted again" in done.stderr


def test_a_port_given_twice_is_refused_and_an_ipv6_host_gets_a_url_with_brackets() -> None:
    from aurora.cli.stack import _url
    from aurora.errors import ConfigError
    from aurora.stack import listen

    port = free_port()
    with pytest.raises(ConfigError, match=f"port {port} is given twice"):
        listen("127.0.0.1", [port, port])
    assert not reachable("127.0.0.1", port)
    assert _url("::1", 9292) == "http://[::1]:9292" and _url("127.0.0.1", 9292) == "http://127.0.0.1:9292"

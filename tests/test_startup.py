"""What a new user sees after ``aurora up``: one short block (page and API URLs, the key on first
start or where it is kept, docs, logs, how to stop) and then nothing: no gunicorn or Celery
banner, no root SecurityWarning, no kombu hostname warning, no sweep lines every interval."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from conftest import free_port

#: what the terminal showed before, each a line or a banner that pushed the key off the screen
NOISE = ("Starting gunicorn", "Listening at", "Booting worker", "[tasks]", "-------------- ", "SecurityWarning",
         "superuser privileges", "No hostname was supplied", "Sending due task", "aurora.sweep[")
#: the children's own lines: in their log files, not under the block
CHILD_LINES = ("celery.beat", "Connected to", " ready.", "aurora.request")


def wait_for(stack, name: str, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while text not in stack.log(name) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert text in stack.log(name), stack.log(name)
    return stack.log(name)


def stop(stack, name: str = "up") -> None:
    proc = stack.procs.pop(name)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def start_up(stack, *extra: str, name: str = "up") -> str:
    ports = [free_port(), free_port()]
    stack.port = ports[0]
    stack.start(name, "up", "--port", str(ports[0]), "--port", str(ports[1]), *extra)
    return wait_for(stack, name, "Ctrl-C stops everything.")


def test_aurora_up_prints_one_readable_block_and_no_noise(make_stack) -> None:
    stack = make_stack(AURORA_SWEEP_INTERVAL="0.5")  # a sweep every half second: ten in the wait below
    shown = start_up(stack)
    key = stack.read_first_key()
    url = stack.url
    assert requests.get(url + "/health/live", timeout=5).status_code == 200  # it waited for the web to answer
    stack.wait_healthy()
    schema = requests.get(url + "/schemas/workflow.json", timeout=5).json()  # what an editor fetches
    assert schema["$id"] == url + "/schemas/workflow.json" and requests.get(schema["$id"], timeout=5).json() == schema
    time.sleep(5)
    out = stack.log("up")
    assert out == shown, "nothing may follow the block while the stack runs quietly"
    lines = out.strip().splitlines()
    assert len(lines) <= 14, out
    assert lines[0].startswith("Aurora ") and "is running" in lines[0]
    assert re.search(rf"Approval page +{re.escape(url)}/ui/$", out, re.M)
    assert re.search(rf"API +{re.escape(url)} ", out, re.M)
    assert re.search(rf"Docs +{re.escape(url)}/docs .*README\.md and .*docs/$", out, re.M)
    assert re.search(rf"Admin key +{key} +\(shown once; saved for the aurora command in .*cli\.json\)", out)
    assert f"export AURORA_URL={url} AURORA_TOKEN={key}" in out
    logs = Path(stack.env["AURORA_HOME"]) / "logs"
    assert re.search(r"Logs +.*logs/ \(web\.log, worker\.log, system\.log\)$", out, re.M)
    assert lines[-1] == "Ctrl-C stops everything."
    for noise in NOISE + CHILD_LINES:
        assert noise not in out, noise

    # The children's lines are in the files the block names, and the sweep said nothing there either.
    assert "ready." in (logs / "worker.log").read_text()
    system = (logs / "system.log").read_text()
    assert "beat: Starting" in system
    assert "aurora.sweep" not in system and "Sending due task" not in system, system
    assert key not in stack.up_logs()
    assert (logs / "web.log").stat().st_mode & 0o077 == 0

    stop(stack)
    # A second start: no new key; the block says where the first one is kept.
    again = start_up(stack, name="up-again")
    assert "aur_" not in again and re.search(r"Admin key +kept in .*cli\.json for the aurora command", again)


def test_the_noise_is_gone_from_the_terminal_too_and_a_failing_child_shows_its_log(make_stack, tmp_path) -> None:
    stack = make_stack(AURORA_SWEEP_INTERVAL="0.5")
    start_up(stack, "--logs", "-")  # every child writes to the terminal, as before
    stack.read_first_key()
    stack.wait_healthy()
    time.sleep(4)
    out = stack.log("up")
    assert "ready." in out and "beat: Starting" in out  # the children's own lines are here now
    for noise in NOISE:
        assert noise not in out, noise
    assert out.count("running as root") <= 3  # once per worker process and in the block, in one line each
    stop(stack)

    # A child that keeps failing: the supervisor stops and shows the end of its log file.
    import subprocess
    import sys

    script = (
        "import sys\nfrom pathlib import Path\nfrom aurora import stack\nstack.RESTART_DELAY = 0.01\n"
        f"logs = stack.log_files(Path({str(tmp_path / 'logs')!r}), ['ok', 'broken'])\n"
        "code = stack.run_stack({'ok': [sys.executable, '-c', 'import time; time.sleep(60)'],"
        " 'broken': [sys.executable, '-c', 'raise SystemExit(\"the policy file is missing\")']}, logs=logs)\n"
        "sys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1, done.stderr
    assert "its last lines, from" in done.stderr and "broken.log" in done.stderr
    assert "  | the policy file is missing" in done.stderr
    assert f"The end of {tmp_path / 'logs' / 'broken.log'}, below, say why" in done.stderr


def test_make_run_installs_no_test_tools_and_make_test_adds_them(tmp_path) -> None:
    import subprocess

    from conftest import ROOT

    def plan(target: str) -> str:  # what make would do in a fresh clone (a venv that does not exist yet)
        return subprocess.run(["make", "-n", target, f"VENV={tmp_path / 'venv'}"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout

    run = plan("run")
    assert "pip install --quiet --no-compile -e .\n" in run and "[test]" not in run
    assert "aurora up" in run
    test = plan("test")
    assert "-e '.[test]'" in test and "pytest" in test


def test_a_fresh_stack_is_healthy_without_waiting_a_sweep_interval(make_stack) -> None:
    """Beat's first firing of an interval comes one interval after it starts: the stack sweeps at
    once instead, so a new user's first `/health` says "ok" (and a crash is recovered) within seconds."""
    stack = make_stack(AURORA_SWEEP_INTERVAL="120")
    start_up(stack)
    deadline = time.monotonic() + 30
    body: dict = {}
    while time.monotonic() < deadline:
        body = requests.get(stack.url + "/health", timeout=5).json()
        if body["status"] == "ok":
            break
        time.sleep(0.2)
    assert body["status"] == "ok" and body["components"]["sweeps"]["ok"], body
    stop(stack)


def test_the_running_supervisor_loads_no_metrics_client_and_no_urllib(make_stack) -> None:
    """The real `aurora up`, its imports printed by Python itself (``-X importtime``, which its
    children do not inherit): while it starts the stack and probes the web, the supervisor loads
    neither prometheus_client (it counts only a restart) nor urllib.request (docs/benchmarks.md)."""
    stack = make_stack()
    ports = [free_port(), free_port()]
    stack.port = ports[0]
    log = stack.cwd / "up.log"
    stack.logs["up"] = log
    with open(log, "ab") as handle:
        stack.procs["up"] = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "aurora", "up", "--port", str(ports[0]), "--port", str(ports[1])],
            env=stack.env, cwd=stack.cwd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    out = wait_for(stack, "up", "Ctrl-C stops everything.")
    imported = {line.rsplit("|", 1)[1].strip() for line in out.splitlines() if line.startswith("import time:")}
    assert "aurora.metrics" in imported and "http.client" in imported, "the import log was not read"
    assert not {m for m in imported if m.startswith(("prometheus_client", "urllib.request"))}, sorted(imported)
    stop(stack)

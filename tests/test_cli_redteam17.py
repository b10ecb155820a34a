"""Red team of issue 17 (the first hour): the CLI's breaks found by following the README and by
misusing every command, each with the test that failed before its fix."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import ROOT, environment_outside, free_port
from werkzeug.serving import make_server

from aurora.cli import main


@pytest.fixture
def web_only(make_stack) -> Any:
    """A stack of the web process alone: nothing runs a run, so a submitted one stays queued and
    its event stream carries keep-alive comments only."""
    stack = make_stack()
    stack.port = free_port()
    stack.aurora("db", "upgrade")
    stack.keys["admin"] = stack.aurora("keys", "create", "admin", "--role", "admin").stdout.strip()
    stack.start("web", "serve", "--port", str(stack.port), "--workers", "1")
    stack.wait_healthy(workers=False)
    return stack


@pytest.fixture
def served(app: Any) -> Any:
    """The app on a loopback port (a real HTTP server; nothing runs the runs)."""
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield port
    server.shutdown()


def cli(port: int, token: str, tmp_path: Any, *args: str, **env: str) -> Any:
    environment = {"AURORA_URL": f"http://127.0.0.1:{port}", "AURORA_TOKEN": token,
                   "AURORA_CLI_CONFIG": str(tmp_path / "cli.json"), "NO_COLOR": "1", **env}
    return CliRunner().invoke(main, list(args), env=environment)


def _cli_env(stack: Any, key: str = "admin") -> dict[str, str]:
    return {**stack.env, "AURORA_URL": stack.url, "AURORA_TOKEN": stack.keys[key], "NO_COLOR": "1"}


def test_submit_wait_ends_at_its_timeout_when_nothing_moves_the_run(web_only) -> None:
    """The stream's keep-alive comments (every 15 s) kept the read from ever timing out: past
    15 s, ``--timeout`` was never honoured; below it, the deadline was told as a lost connection."""
    report = str(ROOT / "workflows" / "send_report.yaml")
    for timeout, at_most in ((2, 9), (17, 27)):
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "aurora", "submit", report, "--wait", "--timeout", str(timeout)],
                              env=_cli_env(web_only), capture_output=True, text=True, timeout=60)
        took = time.monotonic() - started
        assert done.returncode == 7, done.stderr
        assert f"still queued after {timeout} s" in done.stderr, done.stderr
        assert "connection lost" not in done.stderr and "lost the connection" not in done.stderr, done.stderr
        assert took < at_most, (timeout, took)
    assert "Traceback" not in done.stderr and os.environ.get("AURORA_TOKEN") != web_only.keys["admin"]


def _bare_env(tmp_path: Any) -> dict[str, str]:
    env = environment_outside()
    env.update({"AURORA_CLI_CONFIG": str(tmp_path / "cli.json"), "NO_COLOR": "1",
                "AURORA_POLICY_FILE": str(ROOT / "policy" / "batch8_policy.json")})
    return env


def test_a_reader_that_stops_reading_ends_the_command_quietly(tmp_path) -> None:
    """``aurora route - | head -1`` (or ``audit export | head``) printed ``aurora: BrokenPipeError:
    [Errno 32] Broken pipe`` and a hint to rerun with --debug."""
    proc = subprocess.Popen([sys.executable, "-m", "aurora", "route", "-"], env=_bare_env(tmp_path),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin and proc.stdout and proc.stderr

    def feed() -> None:
        try:
            proc.stdin.write(b"Recherchiere Studien zu PBM\n" * 50000)  # far more than a pipe holds
            proc.stdin.close()
        except BrokenPipeError:
            pass

    threading.Thread(target=feed, daemon=True).start()
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does after its line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) != 0
    assert first.startswith(b"perplexity\t")
    assert err == "", err


def test_a_run_id_or_name_is_one_path_segment_never_a_way_to_another_endpoint(served, api_keys, tmp_path) -> None:
    """``aurora status ../health`` asked GET /health and died on ``KeyError: 'id'``; ``aurora
    workflows show ../workflows`` printed the list of runs; ``''``, ``a/b`` and ``?x=1`` gave the
    router's 'The requested URL was not found on the server…'."""
    for given in ("../health", "..", "abc/def", "?x=1", "ffffff#x", "%2e%2e"):
        for command in (["status", given], ["cancel", given], ["approve", given, "--request", "0" * 64],
                        ["rerun", given]):
            done = cli(served, api_keys.admin, tmp_path, *command)
            assert done.exit_code == 2, (command, done.output)
            assert done.stderr.startswith("aurora: no run "), (command, done.output)
            assert "KeyError" not in done.output and "requested URL" not in done.output
    empty = cli(served, api_keys.admin, tmp_path, "status", " ")
    assert empty.exit_code == 2 and "aurora: give the run's id" in empty.stderr, empty.output
    for given in ("../workflows", "x/../../workflows", "?limit=1"):
        for command in (["workflows", "show", given], ["workflows", "history", given], ["run", given],
                        ["workflows", "enable", given], ["workflows", "secret", given]):
            done = cli(served, api_keys.admin, tmp_path, *command)
            assert done.exit_code == 2 and done.stderr.startswith("aurora: no definition "), (command, done.output)
            assert '"runs"' not in done.output


#: what a server that is not Aurora (a proxy, a router's login page, another program) may answer
NOT_AURORA = {
    "500 html": (500, "text/html", b"<html><body><h1>Internal Server Error</h1></body></html>"),
    "502 proxy": (502, "text/plain", b"Bad Gateway"),
    "200 html": (200, "text/html", b"<!doctype html><html><title>Router login</title></html>"),
    "a list": (200, "application/json", b"[1, 2, 3]"),
    "null": (200, "application/json", b"null"),
    "cut off": (200, "application/json", b'{"runs": ['),
}


@pytest.fixture
def not_aurora() -> Any:
    """A loopback server that answers every request with what ``answer[0]`` names."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    answer = ["500 html"]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def reply(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, kind, body = NOT_AURORA[answer[0]]
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = reply

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], answer
    server.shutdown()


def test_a_server_that_is_not_aurora_is_named_so_never_dumped_nor_a_keyerror(not_aurora, tmp_path) -> None:
    """Before: ``aurora: <html><body><h1>Internal Server Error…`` (the page's HTML as the message),
    ``aurora: KeyError: 'runs'``, ``TypeError: list indices must be integers…``."""
    port, answer = not_aurora
    report = str(ROOT / "workflows" / "send_report.yaml")
    commands = (["list"], ["status", "abcdef12"], ["approvals"], ["submit", report], ["workflows", "list"],
                ["approve", "abcdef12", "--request", "0" * 64], ["status", "abcdef12", "--json"])
    for name in NOT_AURORA:
        answer[0] = name
        for command in commands:
            done = cli(port, "aur_x_y", tmp_path, *command)
            shown = f"{name}: aurora {' '.join(command)} ->\n{done.output}"
            assert done.exit_code in (1, 2) and isinstance(done.exception, SystemExit), shown
            lines = done.stderr.splitlines()
            assert lines[0].startswith(f"aurora: the server at http://127.0.0.1:{port} does not answer as Aurora does"), shown
            assert lines[1].startswith("  hint: is AURORA_URL"), shown
            assert "<html" not in done.output and "Error:" not in done.output and "Traceback" not in done.output, shown


def test_an_aurora_url_or_token_that_cannot_be_one_says_so(served, api_keys, tmp_path) -> None:
    """Before: ``cannot reach Aurora at localhost:9292: InvalidSchema`` with the hint 'is the stack
    running?', ``UnicodeEncodeError: 'latin-1' codec…`` for a key with a €, ``InvalidHeader`` for
    one with a line break, and the router's 404 text for an AURORA_URL with /ui."""
    cases = [
        ({"AURORA_URL": "localhost:9292"}, "AURORA_URL 'localhost:9292' is not an http:// or https:// address"),
        ({"AURORA_URL": "ftp://127.0.0.1"}, "AURORA_URL 'ftp://127.0.0.1' is not an http:// or https:// address"),
        ({"AURORA_URL": "http://[::1"}, "AURORA_URL 'http://[::1' is not an http:// or https:// address"),
        ({"AURORA_TOKEN": "aur_abc_d€f"}, "AURORA_TOKEN is not an API key"),
        ({"AURORA_TOKEN": "aur_abc_def\n"}, "AURORA_TOKEN is not an API key"),
        ({"AURORA_URL": f"http://127.0.0.1:{served}/ui"}, f"the server at http://127.0.0.1:{served}/ui does not answer"),
    ]
    for env, expected in cases:
        done = cli(served, api_keys.viewer, tmp_path, "list", **env)
        assert done.exit_code == 2, (env, done.output)
        assert done.stderr.startswith(f"aurora: {expected}"), (env, done.output)
        assert "  hint: " in done.stderr and "is the stack running" not in done.stderr, (env, done.output)
        assert "Error" not in done.stderr.split("hint")[0], (env, done.output)
    refused = cli(free_port(), api_keys.viewer, tmp_path, "list")
    assert refused.exit_code == 1 and "ConnectionError" not in refused.stderr, refused.output
    assert refused.stderr.startswith("aurora: cannot reach Aurora at http://127.0.0.1:") and "nothing answers" in refused.stderr

"""``POST /route`` and ``GET /route/rules`` are answered on the event loop's thread when they need
nothing but memory (aurora/web/asgi.py), in the pool otherwise — with the same answers either way.

The in-process tests drive the real ASGI app with ASGI messages and note, in a ``before_request``
hook of their own, which thread Flask answered in; the last one goes through ``aurora serve``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
import requests

from aurora import keys
from aurora.web import create_app
from aurora.web.asgi import WaitingApp

TEXT = {"text": "Recherchiere aktuelle Studien zu PBM"}


class Served:
    def __init__(self) -> None:
        self.flask = create_app({"TESTING": True})
        self.threads: list[int] = []
        self.flask.before_request(lambda: self.threads.append(threading.get_ident()))
        self.app = WaitingApp(self.flask, threads=2)

    def call(self, method: str, path: str, body: Any = None, key: str | None = None,
             headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, Any, str]:
        """(status, JSON body, "loop" or "pool": where Flask answered)."""
        data = json.dumps(body).encode() if body is not None else b""
        head = [(b"host", b"test"), (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        if key:
            head.append((b"authorization", f"Bearer {key}".encode()))
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
                 "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "headers": head + (headers or []), "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80)}
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": data, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        async def run() -> int:
            await self.app(scope, receive, send)
            return threading.get_ident()

        loop_thread = asyncio.run(run())
        status = sent[0]["status"]
        payload = b"".join(m.get("body", b"") for m in sent[1:])
        where = "loop" if self.threads[-1] == loop_thread else "pool"
        return status, json.loads(payload) if payload else None, where


@pytest.fixture
def served(runtime) -> Served:  # type: ignore[no-untyped-def]
    return Served()


def test_a_remembered_key_is_answered_on_the_loop_with_the_same_answer(served, api_keys) -> None:
    first = served.call("POST", "/route", TEXT, api_keys.viewer)
    second = served.call("POST", "/route", TEXT, api_keys.viewer)
    assert first[2] == "pool" and second[2] == "loop"  # the first verified the key (a read): in the pool
    assert first[:2] == second[:2] and first[0] == 200 and first[1]["target"]
    assert served.call("GET", "/route/rules", None, api_keys.viewer)[2] == "loop"
    status, body, where = served.call("POST", "/route", {"text": ""}, api_keys.viewer)
    assert (status, body["error"], where) == (422, "invalid_workflow", "loop")
    assert body["errors"][0]["path"] == "text"


def test_what_may_wait_goes_to_the_pool(served, api_keys, runtime) -> None:
    for _ in range(2):  # admin keys are read every time
        assert served.call("POST", "/route", TEXT, api_keys.admin)[::2] == (200, "pool")
    served.call("POST", "/route", TEXT, api_keys.viewer)
    runtime.policies._checked_at = 0.0  # the policy file is due a look
    assert served.call("POST", "/route", TEXT, api_keys.viewer)[::2] == (200, "pool")
    assert served.call("POST", "/route", TEXT, api_keys.viewer)[::2] == (200, "loop")
    two = [(b"authorization", f"Bearer {api_keys.viewer}".encode())]
    assert served.call("POST", "/route", TEXT, api_keys.viewer, headers=two)[::2] == (401, "pool")
    wrong = api_keys.viewer[:-4] + "AAAA"
    assert served.call("POST", "/route", TEXT, wrong)[::2] == (401, "pool")
    assert served.call("GET", "/workflows", None, api_keys.viewer)[::2] == (200, "pool")  # not the router's
    keys.revoke(runtime.db, "vic")
    status, body, where = served.call("POST", "/route", TEXT, api_keys.viewer)
    assert (status, body["error"], where) == (401, "unauthorized", "pool")


def test_without_remembering_keys_everything_goes_to_the_pool(served, api_keys, runtime) -> None:
    object.__setattr__(runtime.settings, "key_cache_seconds", 0.0)
    for _ in range(3):
        assert served.call("POST", "/route", TEXT, api_keys.viewer)[::2] == (200, "pool")


def test_a_key_about_to_be_forgotten_is_not_read_on_the_loop(served, api_keys, runtime) -> None:
    object.__setattr__(runtime.settings, "key_cache_seconds", 0.3)
    assert served.call("POST", "/route", TEXT, api_keys.viewer)[2] == "pool"
    assert served.call("POST", "/route", TEXT, api_keys.viewer)[2] == "loop"
    time.sleep(0.25)  # remembered for less than the margin: the next answer may need a read
    assert served.call("POST", "/route", TEXT, api_keys.viewer)[2] == "pool"


def test_the_server_answers_the_router_alike_and_a_revoked_key_stops(make_stack) -> None:
    stack = make_stack(AURORA_KEY_CACHE_SECONDS="0.5")
    stack.aurora("db", "upgrade")
    viewer = stack.aurora("keys", "create", "vic", "--role", "viewer").stdout.strip()
    stack.aurora("keys", "create", "root", "--role", "admin")
    from conftest import free_port

    stack.port = free_port()
    stack.start("web", "serve", "--port", str(stack.port), "--workers", "1")
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(stack.url + "/health", timeout=10)
            break
        except requests.RequestException:
            assert time.monotonic() < deadline, stack.log("web")
            time.sleep(0.2)
    headers = {"Authorization": f"Bearer {viewer}"}
    answers = [requests.post(stack.url + "/route", json=TEXT, headers=headers, timeout=10) for _ in range(20)]
    assert {a.status_code for a in answers} == {200}
    assert len({a.content for a in answers}) == 1
    assert all(a.headers["X-Frame-Options"] == "DENY" for a in answers)
    empty = requests.post(stack.url + "/route", json={"text": " "}, headers=headers, timeout=10)
    assert empty.status_code == 422 and empty.json()["errors"][0]["path"] == "text"
    revoke = subprocess.Popen([sys.executable, "-m", "aurora", "keys", "revoke", "vic"], env=stack.env,
                              cwd=stack.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while revoke.poll() is None:
        requests.post(stack.url + "/route", json=TEXT, headers=headers, timeout=10)
    revoked = time.monotonic()
    assert revoke.returncode == 0, revoke.stderr.read()  # type: ignore[union-attr]
    while requests.post(stack.url + "/route", json=TEXT, headers=headers, timeout=10).status_code == 200:
        assert time.monotonic() - revoked < 0.5 + 0.5, "a revoked key outlived AURORA_KEY_CACHE_SECONDS"
    refused = requests.post(stack.url + "/route", json=TEXT, headers=headers, timeout=10)
    assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"

"""Small fake provider servers on loopback: they speak the providers' wire formats, answer from a
script, and record every request they receive."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode())


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class FakeServer:
    """``server.script(path_prefix, Reply, ...)`` queues replies; unscripted requests get ``default``."""

    def __init__(self, default: Any = None):
        self.received: list[Received] = []
        self.scripts: dict[str, deque[Reply]] = {}
        self.default = default or (lambda request: Reply(404, {"error": "not scripted"}))
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                request = Received(self.command, parts.path, parse_qs(parts.query),
                                   {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
                with fake.lock:
                    fake.received.append(request)
                    reply = None
                    for prefix, queue in fake.scripts.items():
                        if parts.path.startswith(prefix) and queue:
                            reply = queue.popleft()
                            break
                if reply is None:
                    reply = fake.default(request)
                if reply.delay:
                    time.sleep(reply.delay)
                payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def script(self, prefix: str, *replies: Reply) -> None:
        with self.lock:
            self.scripts.setdefault(prefix, deque()).extend(replies)

    def requests_to(self, prefix: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path.startswith(prefix)]

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def openai_answer(text: str, model: str = "gpt-5") -> Reply:
    return Reply(200, {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    })


def anthropic_answer(text: str, model: str = "claude-sonnet-4-5") -> Reply:
    return Reply(200, {
        "id": "msg_1", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 10, "output_tokens": 5},
    })


def engine_default(request: Received) -> Reply:
    """An engine server that answers every well-formed request."""
    if request.path.endswith("/messages"):
        return anthropic_answer("anthropic says hi")
    if request.path.endswith("/chat/completions"):
        return openai_answer("openai says hi")
    return Reply(404, {"error": {"message": "unknown path"}})


class StripeState:
    """A fake Stripe account: PaymentIntents (made, and asked for), idempotency keys, customers."""

    def __init__(self, secret_key: str):
        self.secret_key = secret_key
        #: a customer's default payment method (others: pm_card_visa; cus_nopm has none)
        self.default_methods: dict[str, str] = {}
        self.intents: dict[str, dict[str, Any]] = {}
        self.by_key: dict[str, tuple[int, dict[str, Any]]] = {}
        self.lock = threading.Lock()
        #: how many times a PaymentIntent was asked for (GET /v1/payment_intents/ID)
        self.retrieved = 0

    def __call__(self, request: Received) -> Reply:
        if request.headers.get("authorization") != f"Bearer {self.secret_key}":
            return Reply(401, {"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}})
        if request.method == "GET" and request.path.startswith("/v1/customers/"):
            customer = request.path.rsplit("/", 1)[1]
            default = None if customer == "cus_nopm" else self.default_methods.get(customer, "pm_card_visa")
            return Reply(200, {"id": customer, "object": "customer",
                               "invoice_settings": {"default_payment_method": default}})
        if request.method == "GET" and request.path.startswith("/v1/payment_intents/"):
            # the object as this account holds it now: tests change ``intents[id]`` to move it on
            with self.lock:
                intent = self.intents.get(request.path.rsplit("/", 1)[1])
                self.retrieved += 1
            if intent is None:
                return Reply(404, {"error": {"type": "invalid_request_error", "code": "resource_missing",
                                             "message": "No such payment_intent"}})
            return Reply(200, intent)
        if request.method == "POST" and request.path == "/v1/payment_intents":
            key = request.headers.get("idempotency-key", "")
            with self.lock:
                if key in self.by_key:
                    status, body = self.by_key[key]
                    return Reply(status, body, {"Idempotent-Replayed": "true"})
                form = {k: v[0] for k, v in request.form().items()}
                if form.get("customer") == "cus_declined":
                    status, body = 402, {"error": {"type": "card_error", "code": "card_declined",
                                                   "decline_code": "insufficient_funds", "message": "declined"}}
                else:
                    number = len(self.intents) + 1
                    body = {"id": f"pi_{number:04d}", "object": "payment_intent", "amount": int(form["amount"]),
                            "currency": form["currency"], "customer": form["customer"],
                            "status": "processing" if form["customer"] == "cus_async" else "succeeded",
                            "latest_charge": f"ch_{number:04d}", "payment_method": form.get("payment_method"),
                            "metadata": {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")}}
                    self.intents[body["id"]] = body
                    status = 200
                if key:
                    self.by_key[key] = (status, body)
                return Reply(status, body)
        return Reply(404, {"error": {"type": "invalid_request_error", "message": "Unrecognized request URL"}})


class MailgunState:
    def __init__(self, api_key: str):
        self.api_key = api_key
        self.sent: list[dict[str, list[str]]] = []
        #: answer every request with an error that quotes the Authorization header (as some do)
        self.echo_authorization = False

    def __call__(self, request: Received) -> Reply:
        import base64

        expected = "Basic " + base64.b64encode(f"api:{self.api_key}".encode()).decode()
        if self.echo_authorization:
            return Reply(400, {"message": f"bad request (Authorization: {request.headers.get('authorization')})"})
        if request.headers.get("authorization") != expected:
            return Reply(401, b"Forbidden")
        if request.method == "POST" and request.path.endswith("/messages"):
            self.sent.append(request.form())
            return Reply(200, {"id": f"<{len(self.sent)}@mg.example.com>", "message": "Queued. Thank you."})
        return Reply(404, {"message": "not found"})


class TypeformState:
    def __init__(self, token: str, form_id: str, count: int):
        self.token, self.form_id = token, form_id
        self.responses = [self.response(i) for i in range(count)]

    @staticmethod
    def response(i: int) -> dict[str, Any]:
        return {"token": f"tok{i:05d}", "response_id": f"tok{i:05d}", "submitted_at": f"2026-11-01T10:{i % 60:02d}:00Z",
                "answers": [{"field": {"ref": "email"}, "type": "email", "email": f"k{i}@example.com"}], "hidden": {}}

    def add(self, count: int) -> None:
        start = len(self.responses)
        self.responses += [self.response(i) for i in range(start, start + count)]

    def __call__(self, request: Received) -> Reply:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return Reply(401, {"code": "AUTHENTICATION_FAILED"})
        if request.path != f"/forms/{self.form_id}/responses":
            return Reply(404, {"code": "FORM_NOT_FOUND"})
        size = int(request.query.get("page_size", ["25"])[0])
        after = request.query.get("after", [None])[0]
        items = self.responses
        if after:
            index = next((i for i, r in enumerate(items) if r["token"] == after), None)
            items = items[index + 1:] if index is not None else []
        page = items[:size]
        return Reply(200, {"total_items": len(items), "page_count": max(1, -(-len(items) // size)), "items": page})


class GraphState:
    """Facebook page feed and Instagram containers, Graph API v21.0."""

    def __init__(self, *tokens: str, page: str = "page1", account: str = "ig1", polls_before_ready: int = 1):
        self.tokens, self.page, self.account = set(tokens), page, account
        self.posts: list[dict[str, Any]] = []
        self.containers: dict[str, dict[str, Any]] = {}
        self.published: list[str] = []
        self.polls_before_ready = polls_before_ready

    def __call__(self, request: Received) -> Reply:
        if request.headers.get("authorization", "").removeprefix("Bearer ") not in self.tokens:
            return Reply(400, {"error": {"message": "Invalid OAuth access token.", "type": "OAuthException", "code": 190}})
        path = request.path.split("/")[2:]  # drop "", "v21.0"
        if request.method == "POST" and path == [self.page, "feed"]:
            from datetime import datetime

            form = {k: v[0] for k, v in request.form().items()}
            post = {"id": f"{self.page}_{len(self.posts) + 1}", "message": form["message"],
                    "created_time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")}
            self.posts.append(post)
            return Reply(200, {"id": post["id"]})
        if request.method == "GET" and path == [self.page, "feed"]:
            return Reply(200, {"data": list(reversed(self.posts))})
        if request.method == "POST" and path == [self.account, "media"]:
            form = {k: v[0] for k, v in request.form().items()}
            cid = f"c{len(self.containers) + 1}"
            self.containers[cid] = {"form": form, "polls": 0, "status": "IN_PROGRESS"}
            return Reply(200, {"id": cid})
        if request.method == "GET" and len(path) == 1 and path[0] in self.containers:
            container = self.containers[path[0]]
            container["polls"] += 1
            if container["status"] == "IN_PROGRESS" and container["polls"] > self.polls_before_ready:
                container["status"] = "FINISHED"
            return Reply(200, {"status_code": container["status"], "id": path[0]})
        if request.method == "POST" and path == [self.account, "media_publish"]:
            cid = request.form()["creation_id"][0]
            container = self.containers.get(cid)
            if not container or container["status"] != "FINISHED":
                return Reply(400, {"error": {"message": "Media ID is not available", "code": 9007}})
            container["status"] = "PUBLISHED"
            self.published.append(cid)
            return Reply(200, {"id": f"media_{len(self.published)}"})
        return Reply(400, {"error": {"message": "Unsupported request", "code": 100}})


class HostilePeer:
    """A federation peer that misbehaves as told (``peer.kind``): ``page`` serves ``peer.body``
    (JSON) as it is, or what ``peer.body(query)`` returns, after ``delay`` seconds; ``redirect`` answers 302 to ``peer.location``; ``trickle_body`` sends a valid
    page's headers, then its body a byte every ``interval`` seconds; ``trickle_headers`` sends its
    headers that slowly; ``dies`` sends a valid page's headers and half its body, then resets the connection; ``huge`` streams ``huge_bytes`` of one endless page, with no
    Content-Length (so only reading it can find its size). It records each request and, for each
    connection, when the client hung up and how many bytes it had been sent."""

    def __init__(self) -> None:
        self.kind = "page"
        self.body: Any = {"node": "evil", "events": [], "last_seq": 0, "has_more": False}
        self.location = ""
        self.interval = 1.0
        self.delay = 0.0
        self.huge_bytes = 50 * 1024 * 1024
        self.received: list[Received] = []
        self.hangups: list[tuple[float, int]] = []  # (time.monotonic(), bytes sent before)
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                parts = urlsplit(self.path)
                with fake.lock:
                    fake.received.append(Received("GET", parts.path, parse_qs(parts.query),
                                                  {k.lower(): v for k, v in self.headers.items()}, b""))
                self.sent = 0
                try:
                    getattr(self, f"_{fake.kind}")()
                except (BrokenPipeError, ConnectionResetError):
                    with fake.lock:
                        fake.hangups.append((time.monotonic(), self.sent))
                    self.close_connection = True

            def _write(self, data: bytes) -> None:
                self.wfile.write(data)
                self.wfile.flush()
                self.sent += len(data)

            def _page(self) -> None:
                time.sleep(fake.delay)
                body = fake.body(parse_qs(urlsplit(self.path).query)) if callable(fake.body) else fake.body
                payload = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self._write(payload)

            def _redirect(self) -> None:
                self.send_response(302)
                self.send_header("Location", fake.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _trickle_body(self) -> None:
                payload = json.dumps(fake.body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                for i in range(len(payload)):
                    self._write(payload[i:i + 1])
                    time.sleep(fake.interval)

            def _trickle_headers(self) -> None:
                self._write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                for _ in range(100_000):
                    self._write(b"a")
                    time.sleep(fake.interval)

            def _dies(self) -> None:
                # a valid page's headers and half its body, then the connection is reset (the
                # process behind it died mid-answer)
                payload = json.dumps(fake.body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self._write(payload[:len(payload) // 2])
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

            def _huge(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Connection", "close")
                self.end_headers()
                self._write(b'{"node": "evil", "last_seq": 1, "has_more": false, "events": [')
                filler = b'{"id": "x", "origin": "evil", "seq": 1, "type": "t", "data": {}}, ' * 1000
                while self.sent < fake.huge_bytes:
                    self._write(filler)
                self._write(b"{}]}")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> HostilePeer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

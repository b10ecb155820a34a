"""Small fake provider servers on loopback: they speak the providers' wire formats, answer from a
script, and record every request they receive."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
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
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

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

"""The web's HTTP protocol (aurora/web/protocol.py): an answer's head and body leave in one write,
a head whose body is not ready leaves at the end of the loop's turn, and no byte is reordered.

uvicorn's real protocol, fed a real request; the transport records what the protocol writes (as
the kernel would receive it)."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from aurora.web.protocol import OneWrite

GET = b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n"


class Recording(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.writes.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _exchange(app: Any, request: bytes = GET, settle: float = 0.2) -> tuple[list[bytes], list[int]]:
    """What the protocol writes for ``request``; and how many writes there were each time the app
    was about to send (``app`` gets a function that tells)."""
    config = Config(app, http=OneWrite, lifespan="off", log_level="warning")
    config.load()
    transport = Recording()
    seen: list[int] = []
    config.loaded_app.app.written = lambda: seen.append(len(transport.writes))  # type: ignore[attr-defined]
    protocol = OneWrite(config, ServerState(), app_state={})
    protocol.connection_made(transport)
    protocol.data_received(request)
    await asyncio.sleep(settle)
    return transport.writes, seen


class App:
    written: Any = None

    def __init__(self, parts: list[bytes], pause: float = 0.0, chunked: bool = False):
        self.parts, self.pause, self.chunked = parts, pause, chunked

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        length = [] if self.chunked else [(b"content-length", str(sum(map(len, self.parts))).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain"), *length]})
        for i, part in enumerate(self.parts):
            if self.pause:
                await asyncio.sleep(self.pause)
            self.written()
            await send({"type": "http.response.body", "body": part, "more_body": i < len(self.parts) - 1})


def test_an_answer_leaves_in_one_write() -> None:
    writes, _ = asyncio.run(_exchange(App([b'{"ok": true}'])))
    assert len(writes) == 1, writes
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and writes[0].endswith(b'\r\n\r\n{"ok": true}')


def test_a_head_whose_body_waits_leaves_at_the_end_of_the_turn_and_nothing_is_reordered() -> None:
    app = App([b"data: 1\n\n", b"data: 2\n\n"], pause=0.05, chunked=True)
    writes, seen = asyncio.run(_exchange(app))
    assert seen[0] == 1, "the head waited for a body that was not ready"
    whole = b"".join(writes)
    head, _, body = whole.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"transfer-encoding: chunked" in head
    assert body == b"9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n0\r\n\r\n"


def test_keep_alive_answers_each_leave_in_one_write() -> None:
    writes, _ = asyncio.run(_exchange(App([b"one"]), request=GET + GET))
    assert len(writes) == 2 and all(w.endswith(b"\r\n\r\none") for w in writes), writes

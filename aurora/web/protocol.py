"""The web's HTTP protocol: uvicorn's httptools protocol, answering in one write.

uvicorn writes a response's head (status line and headers) when the app sends
``http.response.start``, and its body when the app sends ``http.response.body``: two ``send``
calls, two segments on the wire, and a client that reads the head and then waits for the body.
Every answer of Aurora's sends the two one right after the other, so here the head waits for the
first part of its body and both leave in one write. A head whose body does not follow in the
same turn of the event loop (an event stream that waits for its first event) leaves at the end
of that turn. Bytes are never reordered: whatever is held goes out before anything written after.

uvicorn tells each connection when the server begins a graceful stop (``shutdown``), but not the
app: a request that waits for a run (aurora/web/asgi.py) would wait on until the graceful time
ran out and was then cut off, with an error in the log. Here the stop is passed on to the app
this connection serves — its ``stop_waiting``, found through the middleware uvicorn may wrap it
in — so that its waiters answer at once with what they have. The app of this server only: another
server in the same process goes on waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_INTERIM = (b"HTTP/1.1 1", b"HTTP/1.0 1")

class OneWrite(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeadWithBody(transport))  # type: ignore[arg-type]

    def shutdown(self) -> None:
        # called for each connection open when the stop begins: stop_waiting must be cheap to repeat
        stop_waiting = _stop_waiting_of(self.app)
        if stop_waiting is not None:
            stop_waiting()
        super().shutdown()  # a response in flight: the connection closes once it is complete


def _stop_waiting_of(app: Any) -> Callable[[], None] | None:
    """The app's ``stop_waiting``, looked for through the middleware wrapped around it (``.app``)."""
    for _ in range(8):  # uvicorn wraps at most a few layers; a loop of wrappers must not hang a stop
        if app is None:
            return None
        found = getattr(app, "stop_waiting", None)
        if callable(found):
            return found
        app = getattr(app, "app", None)
    return None


class _HeadWithBody:
    """A connection's transport that holds a response's head until the next write."""

    def __init__(self, transport: asyncio.Transport):
        self._transport = transport
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif _is_head(data):
            self._held = data
            asyncio.get_running_loop().call_soon(self.flush)
            return
        self._transport.write(data)

    def flush(self) -> None:
        if self._held is not None:
            data, self._held = self._held, None
            self._transport.write(data)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # everything else is the transport's own
        return getattr(self._transport, name)


def _is_head(data: bytes) -> bool:
    """A response's status line and headers, as uvicorn writes them: in one piece, ending in an
    empty line (not a 100 Continue, which the client waits for before it sends a body). Were a
    body's chunk to look the same, it would only wait for the next write or the turn's end."""
    return data.startswith(b"HTTP/1.") and data.endswith(b"\r\n\r\n") and not data.startswith(_INTERIM)

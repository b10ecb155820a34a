"""A small TCP proxy in front of PostgreSQL that counts round trips, and can freeze.

A round trip is a turn of the conversation: the client sends after the server last spoke (or
first). Statements sent in a pipeline before their answers come back are one turn, however many
TCP segments they take; a statement and its answer, then the next statement, are two. The turn is
counted before its bytes are forwarded, so a reply the client waited for is always seen first.

``freeze()`` stops forwarding in both directions while keeping every socket open: to the client
it is a server that accepts packets and never answers (as a ``SIGSTOP``ped one does). With
``refusing`` set, a new connection is closed at once (a server gone); with ``stalling``, it is
accepted and never answered (a frozen server) — while those open go on in both cases. (Any TCP
server can stand behind it: an HTTP one too.)
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit


class Proxy:
    def __init__(self, host: str, port: int):
        self.upstream = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.turns = 0
        self._lock = threading.Lock()
        self._running = threading.Event()
        self._running.set()
        self._closed = False
        self._sockets: list[socket.socket] = []
        self.refusing = self.stalling = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, url: str) -> str:
        """``url`` (a PostgreSQL URL on the upstream) through this proxy."""
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)
        netloc[-1] = f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc="@".join(netloc)))

    def freeze(self) -> None:
        self._running.clear()

    def close(self) -> None:
        self._closed = True
        self._running.set()
        for sock in [self.listener, *self._sockets]:
            try:
                sock.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            if self.stalling:
                self._sockets.append(client)  # open, unanswered, until close()
                continue
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            last = ["server"]  # this connection's last speaker: the client's first bytes are a turn
            threading.Thread(target=self._pump, args=(client, server, "client", last), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, "server", last), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, side: str, last: list[str]) -> None:
        try:
            while data := source.recv(65536):
                self._running.wait()
                if self._closed:
                    break
                with self._lock:
                    if side == "client" and last[0] != "client":
                        self.turns += 1
                    last[0] = side
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@contextmanager
def proxy_for(url: str) -> Iterator[Proxy]:
    parts = urlsplit(url)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    try:
        yield proxy
    finally:
        proxy.close()

"""The HTTP exchange of a page fetch (aurora/federation/fetch.py): one GET to a peer, whole by a
wall-clock deadline (a watchdog shuts the sockets down), its body streamed up to a byte cap, no
redirects, nothing compressed."""

from __future__ import annotations

import contextvars
import socket
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .fetch import CHUNK_BYTES, ERROR_BODY_BYTES, FederationFetchError, said

if TYPE_CHECKING:
    from .fetch import Abort


# -- the deadline's watchdog ---------------------------------------------------------------------

class Watchdog:
    """Shuts down the sockets of one page's exchange at its deadline. ``shutdown`` (never
    ``close``, whose descriptor another thread could be reusing) wakes a blocked read at once."""

    def __init__(self, deadline: float):
        self.fired = False
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.timer = threading.Timer(max(deadline - time.monotonic(), 0.0), self.fire)
        self.timer.daemon = True

    def attach(self, sock: socket.socket) -> None:
        with self.lock:
            self.sockets.append(sock)
            fired = self.fired
        if fired:
            _shutdown(sock)

    def fire(self) -> None:
        with self.lock:
            self.fired = True
            sockets = list(self.sockets)
        for sock in sockets:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


_watchdog: contextvars.ContextVar[Watchdog | None] = contextvars.ContextVar("aurora_fetch_watchdog", default=None)


def _watched(sock: socket.socket) -> socket.socket:
    watchdog = _watchdog.get()
    if watchdog is not None:
        watchdog.attach(sock)
    return sock


class _Connection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _watched(super()._new_conn())


class _TLSConnection(HTTPSConnection):
    # the raw socket is watched before the TLS handshake, which a peer could trickle too
    def _new_conn(self) -> socket.socket:
        return _watched(super()._new_conn())


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


_POOLS = {"http": _Pool, "https": _TLSPool}


class _Adapter(HTTPAdapter):
    """requests' adapter, with connections the watchdog sees (direct or through a proxy)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = _POOLS
        return manager


def bounded_get(url: str, params: dict[str, Any] | None, headers: dict[str, str], cap: int, deadline: float,
                 what: str, abort: Abort | None = None) -> tuple[int, bytes]:
    """(status, body): a 200's body refused past ``cap`` bytes, any other's cut to its first
    :data:`ERROR_BODY_BYTES`; the whole exchange by ``deadline``."""
    watchdog = Watchdog(deadline)
    token = _watchdog.set(watchdog)
    if abort is not None:
        abort.watch(watchdog)
    watchdog.timer.start()
    try:
        with requests.Session() as session:
            adapter = _Adapter(max_retries=0, pool_connections=1, pool_maxsize=1)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            answer = _exchange(session, url, params, headers, cap, deadline, what)
    except requests.RequestException as exc:
        if watchdog.fired or time.monotonic() >= deadline:
            raise _too_slow(contacted=bool(watchdog.sockets)) from None
        raise FederationFetchError("unreachable", f"unreachable: {exc.__class__.__name__}", contacted=False) from None
    except FederationFetchError:
        if watchdog.fired:  # what was cut short looked like a (bad) answer
            raise _too_slow(contacted=True) from None
        raise
    finally:
        watchdog.timer.cancel()
        _watchdog.reset(token)
    if watchdog.fired:
        # http.client takes headers cut off by the shutdown for the end of the headers, and an
        # empty body for the whole body
        raise _too_slow(contacted=True)
    return answer


def _too_slow(contacted: bool) -> FederationFetchError:
    return FederationFetchError("deadline", "deadline: the answer did not arrive whole in time "
                                "(a peer too slow, or trickling its answer)", contacted=contacted)


def _exchange(session: requests.Session, url: str, params: dict[str, Any] | None, headers: dict[str, str],
              cap: int, deadline: float, what: str) -> tuple[int, bytes]:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _too_slow(contacted=False)
    headers = {**headers, "Accept": "application/json", "Accept-Encoding": "identity", "Connection": "close"}
    with session.get(url, params=params, headers=headers, timeout=(remaining, remaining), stream=True,
                     allow_redirects=False) as response:
        status = response.status_code
        if 300 <= status < 400:
            raise FederationFetchError("redirect", f"refused: HTTP {status} redirect to "
                                       f"{_shown(response.headers.get('Location', ''))} (redirects are not followed)")
        if status != 200:
            return status, _read(response, ERROR_BODY_BYTES, deadline, cut=False)
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            # asked for identity: a compressed answer could hide any size behind a small one
            raise FederationFetchError("bad_page", f"bad answer: compressed ({encoding[:20]}) though identity was asked")
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > cap:
            raise _too_big(cap, what)
        try:
            return status, _read(response, cap, deadline, cut=True, what=what)
        except requests.Timeout:
            raise
        except requests.RequestException as exc:
            # the peer answered, then its answer broke off (its process died, the connection was
            # reset): a failure of a peer that was reached, so its heartbeat is recorded
            raise FederationFetchError("unreachable", f"the answer broke off before its end: {exc.__class__.__name__}",
                                       contacted=True) from None


def _read(response: requests.Response, cap: int, deadline: float, cut: bool, what: str = "") -> bytes:
    """The body, streamed up to ``cap`` bytes; past the cap, refused (``cut``) or truncated."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(CHUNK_BYTES):
        if time.monotonic() >= deadline:
            raise requests.Timeout("deadline")  # reported as the deadline by fetch_page
        size += len(chunk)
        if size > cap:
            if cut:
                raise _too_big(cap, what)
            chunks.append(chunk[:cap - size + len(chunk)])
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _too_big(cap: int, what: str) -> FederationFetchError:
    return FederationFetchError("body_too_large", f"refused: the answer is larger than {cap} bytes"
                                + (f" {what}" if what else ""))


def _shown(location: str) -> str:
    """Where a redirect pointed, without its query or fragment (which could carry a secret)."""
    parts = urlsplit(location.strip())
    return said(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), 160) or "(no Location)"



"""A small HTTP client for the CLI: URL and key from ``AURORA_URL`` / ``AURORA_TOKEN`` or the
config file that ``aurora up`` writes (mode 0600)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from .cli_config import config_path, read_config
from .errors import ClientError, ConfigError

DEFAULT_URL = "http://127.0.0.1:9292"
#: tries of a request that is safe to repeat: a GET, or a POST that carries an Idempotency-Key
ATTEMPTS = 4
#: the longest wait between two tries, whatever a 503's Retry-After says (seconds)
MAX_WAIT = 10.0
#: seconds without a byte after which an event stream is taken for dead (the server sends a
#: keep-alive comment every 15 s)
STREAM_IDLE = 45.0
#: seconds before asking again after a stream that ended without the run being done
STREAM_RETRY = 1.0
#: what may fail on the way and be tried again: the request may or may not have arrived
RETRIED = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
#: answers of a server (or a proxy in front of it) that is there again in a moment
UNAVAILABLE = frozenset({502, 503, 504})


class ClientConfigError(ConfigError):
    """Raised when AURORA_URL or AURORA_TOKEN (or the config file's) cannot be an address or a key."""

    code = "client_config"

    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.hint = hint


#: the hint for an answer that is not Aurora's
NOT_AURORA_HINT = ("is AURORA_URL the address `aurora up` printed (the API itself, e.g. http://127.0.0.1:9292, "
                   "without a path)?")


def _check_url(url: str, where: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientConfigError(f"{where} {url!r} is not an http:// or https:// address",
                                "e.g. AURORA_URL=http://127.0.0.1:9292 (what `aurora up` prints)")


def _check_token(token: str, where: str) -> None:
    # a header carries printable ASCII only: a pasted line break, space or typographic character
    # would fail deep in the HTTP library with its own words
    if not (token.isascii() and token.isprintable() and " " not in token):
        raise ClientConfigError(f"{where} is not an API key: it holds a space, a line break or a character "
                                "other than ASCII", "copy the key again: it looks like aur_… (letters, digits, _ and -)")


def unreachable_words(exc: Exception) -> str:
    """Why a request got no answer, in words."""
    if isinstance(exc, requests.exceptions.SSLError):
        return "the TLS handshake failed (does the address need http:// rather than https://?)"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "no answer to the connection (a firewall, or the wrong host?)"
    if isinstance(exc, requests.Timeout):
        return "it stopped answering (timeout)"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the answer broke off"
    if isinstance(exc, requests.ConnectionError):
        return "nothing answers there (connection refused or reset)"
    if isinstance(exc, ClientError):  # a request that gave up: its message says why
        return str(exc)
    return exc.__class__.__name__


def _not_aurora(url: str, response: requests.Response) -> ClientError:
    kind = (response.headers.get("Content-Type") or "no content type").split(";")[0].strip()
    return ClientError(f"the server at {url} does not answer as Aurora does (HTTP {response.status_code}, {kind})",
                       response.status_code, {"error": "not_aurora"})


@dataclass
class Client:
    url: str
    token: str | None
    timeout: float = 30.0
    #: seconds before the second try; doubled for each further one
    backoff: float = 0.5

    @classmethod
    def from_environment(cls) -> Client:
        stored = read_config()
        url = os.environ.get("AURORA_URL") or str(stored.get("url") or "") or DEFAULT_URL
        token = os.environ.get("AURORA_TOKEN") or stored.get("token")
        _check_url(url, "AURORA_URL" if os.environ.get("AURORA_URL") else f"the url in {config_path()}")
        if token:
            _check_token(str(token), "AURORA_TOKEN" if os.environ.get("AURORA_TOKEN") else
                         f"the token in {config_path()}")
        return cls(url.rstrip("/"), token)

    def request(self, method: str, path: str, *, attempts: int = ATTEMPTS, timeout: float | None = None,
                **kwargs: Any) -> dict[str, Any]:
        headers = kwargs.pop("headers", {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        # Repeating is safe only when the server can tell a repeat from a new request.
        repeatable = method == "GET" or "Idempotency-Key" in headers
        for attempt in range(1, attempts + 1):
            last = not repeatable or attempt == attempts
            wait = self.backoff * 2 ** (attempt - 1)
            try:
                response = requests.request(method, self.url + path, headers=headers, timeout=timeout or self.timeout,
                                            **kwargs)
            except RETRIED as exc:
                if last:
                    raise ClientError(f"cannot reach Aurora at {self.url}: {unreachable_words(exc)}") from None
                time.sleep(wait)
                continue
            except requests.RequestException as exc:
                raise ClientError(f"cannot reach Aurora at {self.url}: {unreachable_words(exc)}") from None
            if response.status_code == 503 and not last:
                time.sleep(min(_retry_after(response, wait), MAX_WAIT))
                continue
            break
        try:
            body = response.json()
        except ValueError:
            body = None
        # Aurora answers every request with a JSON object, errors included (``error``, ``message``);
        # anything else is another program at that address (a proxy's or a router's page)
        if not isinstance(body, dict) or (response.status_code >= 400 and "error" not in body):
            raise _not_aurora(self.url, response)
        if response.status_code == 404 and body.get("error") == "not_found" and str(
                body.get("message", "")).startswith("The requested URL was not found"):
            raise _not_aurora(self.url, response)  # no such endpoint: AURORA_URL has a path of its own
        if response.status_code >= 400:
            message = body.get("message") or f"HTTP {response.status_code}"
            raise ClientError(message, response.status_code, body)
        return body

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self.request("POST", path, **kwargs)

    def wait(self, run_id: str, timeout: float, done: Callable[[dict[str, Any]], bool],
             seen: Callable[[dict[str, Any]], None] | None = None,
             lost: Callable[[Exception], None] | None = None) -> dict[str, Any]:
        """Follow a run until ``done(run)`` or ``timeout`` seconds; the run as last read.

        It listens to the run's event stream (``GET /workflows/<id>/stream``, server-sent events),
        so nothing polls: the run is read once at the start and once after each event, and
        ``seen`` is given each read. A stream that breaks off — or whose read after an event finds
        no server (it stopped right after sending it) — is resumed after the last event that was
        read (``Last-Event-ID``), a little later each time it fails, until ``timeout``; ``lost``
        is told each time Aurora cannot be reached.
        """
        deadline = time.monotonic() + timeout
        run = self.get(f"/workflows/{run_id}")
        if seen:
            seen(run)
        last_id: str | None = None
        pause = self.backoff
        while not done(run) and time.monotonic() < deadline:
            headers = {"Accept": "text/event-stream"}
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            if last_id:
                headers["Last-Event-ID"] = last_id
            # a read waits at most this long; the keep-alive comments of an idle stream (every
            # 15 s) restart it, so the deadline is checked at each of them too
            idle = min(STREAM_IDLE, max(deadline - time.monotonic(), 0.1))
            reopen = False
            try:
                with requests.get(f"{self.url}/workflows/{run_id}/stream", headers=headers, stream=True,
                                  timeout=(self.timeout, idle)) as response:
                    if response.status_code in UNAVAILABLE:
                        raise ClientError(f"Aurora at {self.url} is unavailable (HTTP {response.status_code})",
                                          response.status_code)
                    if response.status_code >= 400:
                        return self.get(f"/workflows/{run_id}")  # says why (gone, not allowed) as an error
                    for event_id, name in _events(response):
                        if name == "end" or name.startswith("run."):
                            # once, and no longer than the deadline: this loop tries again itself
                            run = self.request("GET", f"/workflows/{run_id}", attempts=1,
                                               timeout=min(self.timeout, max(deadline - time.monotonic(), 0.5)))
                            if seen:
                                seen(run)
                            pause = self.backoff
                        # only now: were that read lost, the resumed stream sends this event again
                        last_id = event_id or last_id
                        if done(run) or time.monotonic() >= deadline:
                            return run
                        if time.monotonic() + idle > deadline + 0.5:
                            # the next read could outlast the deadline: listen again (after the
                            # last event) with a read timeout that ends at it
                            reopen = True
                            break
                if reopen:
                    continue
                # It ended without the run being done: a server that cannot hold a stream open
                # (a plain WSGI server) answers with the events so far; ask again as it says.
                time.sleep(min(STREAM_RETRY, max(deadline - time.monotonic(), 0)))
                continue
            except RETRIED as exc:
                if time.monotonic() >= deadline - 0.05:
                    return run  # the read timeout that ends at the deadline: Aurora answered, nothing changed
                if lost:  # the caller may say so; the run goes on without us
                    lost(exc)
            except ClientError as exc:  # a read that found no server, after its own tries
                if exc.status is not None and exc.status not in UNAVAILABLE:
                    raise
                if lost:
                    lost(exc)
            except requests.RequestException as exc:
                raise ClientError(f"cannot reach Aurora at {self.url}: {unreachable_words(exc)}") from None
            time.sleep(min(pause, max(deadline - time.monotonic(), 0)))  # it broke: resume a little later
            pause = min(pause * 2, MAX_WAIT)
        return run


def _events(response: requests.Response) -> Iterator[tuple[str | None, str]]:
    """(id, event name) of each server-sent event as it arrives (the data is not needed: the run
    is read whole after each event); a keep-alive comment is ``(None, "")``, so that the reader
    can look at its clock while the run is idle."""
    event_id: str | None = None
    name = ""
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line == "":
            yield (event_id, name) if name else (None, "")
            event_id, name = None, ""


def _retry_after(response: requests.Response, default: float) -> float:
    try:
        return max(float(response.headers.get("Retry-After", default)), 0.0)
    except ValueError:  # an HTTP date: not worth parsing for a CLI
        return default

"""A small HTTP client for the CLI: URL and key from ``AURORA_URL`` / ``AURORA_TOKEN`` or the
config file that ``aurora up`` writes (mode 0600)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from .errors import ClientError

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


def config_path() -> Path:
    if os.environ.get("AURORA_CLI_CONFIG"):
        return Path(os.environ["AURORA_CLI_CONFIG"])
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "aurora" / "cli.json"


def write_config(url: str, token: str) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": url, "token": token}, handle)
    os.chmod(path, 0o600)
    return path


def read_config() -> dict[str, str]:
    path = config_path()
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


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
        url = os.environ.get("AURORA_URL") or stored.get("url") or DEFAULT_URL
        token = os.environ.get("AURORA_TOKEN") or stored.get("token")
        return cls(url.rstrip("/"), token)

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        headers = kwargs.pop("headers", {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        # Repeating is safe only when the server can tell a repeat from a new request.
        repeatable = method == "GET" or "Idempotency-Key" in headers
        for attempt in range(1, ATTEMPTS + 1):
            last = not repeatable or attempt == ATTEMPTS
            wait = self.backoff * 2 ** (attempt - 1)
            try:
                response = requests.request(method, self.url + path, headers=headers, timeout=self.timeout, **kwargs)
            except RETRIED as exc:
                if last:
                    raise ClientError(f"cannot reach Aurora at {self.url}: {exc.__class__.__name__}") from None
                time.sleep(wait)
                continue
            except requests.RequestException as exc:
                raise ClientError(f"cannot reach Aurora at {self.url}: {exc.__class__.__name__}") from None
            if response.status_code == 503 and not last:
                time.sleep(min(_retry_after(response, wait), MAX_WAIT))
                continue
            break
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text[:200]}
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
        ``seen`` is given each read. A stream that breaks off is resumed after the last event
        it delivered (``Last-Event-ID``), a little later each time it fails; ``lost`` is told
        each time Aurora cannot be reached.
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
                    if response.status_code >= 400:
                        return self.get(f"/workflows/{run_id}")  # says why (gone, not allowed) as an error
                    for event_id, name in _events(response):
                        last_id = event_id or last_id
                        if name == "end" or name.startswith("run."):
                            run = self.get(f"/workflows/{run_id}")
                            if seen:
                                seen(run)
                            pause = self.backoff
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
            except requests.RequestException as exc:
                raise ClientError(f"cannot reach Aurora at {self.url}: {exc.__class__.__name__}") from None
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

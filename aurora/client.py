"""A small HTTP client for the CLI: URL and key from ``AURORA_URL`` / ``AURORA_TOKEN`` or the
config file that ``aurora up`` writes (mode 0600)."""

from __future__ import annotations

import json
import os
import time
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


def _retry_after(response: requests.Response, default: float) -> float:
    try:
        return max(float(response.headers.get("Retry-After", default)), 0.0)
    except ValueError:  # an HTTP date: not worth parsing for a CLI
        return default

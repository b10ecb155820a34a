"""Telling the web processes that a run changed, so that a waiting client is answered at once.

A note is one short text, ``"<run id> <event type>,<event type>…"``: a hint to read the run
again, never state (a forged or lost note costs a read or some latency, nothing else).

- Redis broker (production): ``PUBLISH`` on one channel per database; each web process holds
  one subscription, however many clients wait (aurora/web/hub.py).
- Embedded default (filesystem broker, one machine): one UDP datagram on loopback to each web
  process that listens. A listening process names its port by a file in
  ``$AURORA_HOME/notify/`` (``<port>-<pid>``); a publisher re-lists that folder only when its
  modification time changed, so a note costs one ``stat`` and one ``sendto`` per web process.
- Any other broker: no notes; waiters read the run again now and then (``RECHECK_UNNOTIFIED``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from pathlib import Path
from typing import Protocol

from sqlalchemy.engine import make_url

from .config import Settings

log = logging.getLogger(__name__)

#: seconds between two warnings about notes that could not be sent
WARN_EVERY = 30.0


class Publisher(Protocol):
    def __call__(self, changed: dict[str, list[str]]) -> None: ...


def message(run_id: str, types: list[str]) -> bytes:
    return f"{run_id} {','.join(types)}".encode()


def parse(data: bytes | str) -> tuple[str, list[str]] | None:
    """A note's run id and event types; None for anything that is not a note."""
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    run_id, _, types = text.strip().partition(" ")
    if not run_id or len(run_id) > 64:
        return None
    return run_id, [t for t in types.split(",") if t]


def channel(settings: Settings) -> str:
    """The Redis channel of one database's notes (channels ignore Redis's database number, so
    two installations on one Redis must not hear each other)."""
    url = make_url(settings.database_url).render_as_string(hide_password=True)
    return "aurora.changed." + hashlib.sha256(url.encode()).hexdigest()[:16]


def folder(settings: Settings) -> Path:
    return settings.home / "notify"


def uses_redis(settings: Settings) -> bool:
    return settings.broker_url.startswith(("redis://", "rediss://", "unix://"))


def publisher_for(settings: Settings) -> Publisher | None:
    if uses_redis(settings):
        return RedisPublisher(settings.broker_url, channel(settings))
    if settings.embedded_broker:
        return LocalPublisher(folder(settings))
    return None


class _Warner:
    def __init__(self) -> None:
        self._last = -1e9

    def warn(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last >= WARN_EVERY:
            self._last = now
            log.warning("%s (%s); waiting clients learn of changes later", what, exc.__class__.__name__)


class RedisPublisher(_Warner):
    def __init__(self, url: str, channel_name: str):
        super().__init__()
        self.url, self.channel = url, channel_name
        self._client = None
        self._pid = 0

    def _redis(self):  # type: ignore[no-untyped-def]
        if self._client is None or self._pid != os.getpid():  # a forked worker makes its own
            import redis

            # Short timeouts: a note is worth little next to the run that was just committed.
            self._client = redis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
            self._pid = os.getpid()
        return self._client

    def __call__(self, changed: dict[str, list[str]]) -> None:
        try:
            client = self._redis()
            if len(changed) == 1:
                [(run_id, types)] = changed.items()
                client.publish(self.channel, message(run_id, types))
                return
            pipe = client.pipeline(transaction=False)
            for run_id, types in changed.items():
                pipe.publish(self.channel, message(run_id, types))
            pipe.execute()
        except Exception as exc:  # noqa: BLE001 - Redis away: the waiters' re-reads cover it
            self._client = None
            self.warn("could not publish run changes to Redis", exc)


class LocalPublisher(_Warner):
    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self._listing: tuple[int, list[int]] = (-1, [])
        self._sock: socket.socket | None = None
        self._pid = 0

    def ports(self) -> list[int]:
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            return []
        if mtime != self._listing[0]:
            found = []
            for name in os.listdir(self.path):
                port, _, _pid = name.partition("-")
                if port.isdigit():
                    found.append(int(port))
            self._listing = (mtime, found)
        return self._listing[1]

    def __call__(self, changed: dict[str, list[str]]) -> None:
        try:
            ports = self.ports()
            if not ports:
                return
            if self._sock is None or self._pid != os.getpid():
                self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
                self._pid = os.getpid()
            for run_id, types in changed.items():
                data = message(run_id, types)
                for port in ports:
                    try:
                        self._sock.sendto(data, ("127.0.0.1", port))
                    except (ConnectionRefusedError, BlockingIOError):
                        pass  # a listener gone (its file not yet cleared) or a full buffer: a hint lost
        except OSError as exc:
            self.warn("could not send run changes to the web processes", exc)


def register(path: Path, port: int) -> Path:
    """Name a listening UDP port in ``path`` (after clearing the files of processes gone)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in os.listdir(path):
        _port, _, pid = name.partition("-")
        if pid.isdigit() and not _alive(int(pid)):
            try:
                (path / name).unlink()
            except FileNotFoundError:
                pass
    entry = path / f"{port}-{os.getpid()}"
    entry.touch(mode=0o600)
    return entry


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

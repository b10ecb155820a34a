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

import contextlib
import hashlib
import logging
import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any, Protocol

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

    def warn(self, what: str, exc: BaseException, cost: str = "waiting clients learn of changes later") -> None:
        now = time.monotonic()
        if now - self._last >= WARN_EVERY:
            self._last = now
            log.warning("%s (%s); %s", what, exc.__class__.__name__, cost)


class RedisPublisher(_Warner):
    """``PUBLISH`` without waiting for Redis's answer.

    The connection is switched to ``CLIENT REPLY OFF`` once, after its handshake; from then on a
    note is one ``send`` on its socket. Waiting for each ``PUBLISH``'s reply cost a worker a
    round trip to Redis and ~0.15 ms of CPU in redis-py for every committed run (a fifth of a
    dry run's time in a Celery child: the runs/s of issue 21's throughput figure). A note is
    a hint, so one sent into a connection that just broke is lost like any other note.
    """

    def __init__(self, url: str, channel_name: str):
        super().__init__()
        self.url, self.channel = url, channel_name
        self._head = f"*3\r\n$7\r\nPUBLISH\r\n${len(channel_name.encode())}\r\n{channel_name}\r\n".encode()
        self._connection: Any = None
        self._pid = 0
        # One socket for every thread of the process (a web process answers in several): redis-py
        # switches the socket's timeout around each read, so two threads at once could leave one
        # spinning in recv (seen once: a web thread at 100 % CPU, its submit never answered).
        self._lock = threading.Lock()

    def _connected(self) -> Any:
        connection = self._connection
        if connection is not None and self._pid == os.getpid():
            with contextlib.suppress(Exception):  # closed by the server: connect again below
                if not connection.can_read(timeout=0):  # nothing comes back unless it was closed
                    return connection
            connection.disconnect()
        import redis

        # Short timeouts: a note is worth little next to the run that was just committed.
        pool = redis.ConnectionPool.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        connection = pool.make_connection()  # a forked worker makes its own
        connection.connect()  # the handshake (AUTH, SELECT …) still reads its replies
        connection.send_command("CLIENT", "REPLY", "OFF")
        self._connection, self._pid = connection, os.getpid()
        return connection

    def packed(self, changed: dict[str, list[str]]) -> bytes:
        parts = []
        for run_id, types in changed.items():
            data = message(run_id, types)
            parts += [self._head, b"$%d\r\n" % len(data), data, b"\r\n"]
        return b"".join(parts)

    def __call__(self, changed: dict[str, list[str]]) -> None:
        packed = self.packed(changed)
        try:
            with self._lock:
                self._connected().send_packed_command([packed], check_health=False)
        except Exception as exc:  # noqa: BLE001 - Redis away: the waiters' re-reads cover it
            self._connection = None
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
            self._listing = (mtime, [port for port, _pid, _name in listed(self.path)])
        return self._listing[1]

    def __call__(self, changed: dict[str, list[str]]) -> None:
        self.send([message(run_id, types) for run_id, types in changed.items()], "run changes to the web processes")

    def send(self, datagrams: list[bytes], what: str, cost: str = "waiting clients learn of changes later") -> None:
        """Each datagram to every port named in the folder (a hint: one lost costs latency only)."""
        try:
            ports = self.ports()
            if not ports:
                return
            if self._sock is None or self._pid != os.getpid():
                self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
                self._pid = os.getpid()
            for data in datagrams:
                for port in ports:
                    try:
                        self._sock.sendto(data, ("127.0.0.1", port))
                    except (ConnectionRefusedError, BlockingIOError):
                        pass  # a listener gone (its file not yet cleared) or a full buffer: a hint lost
        except Exception as exc:  # noqa: BLE001 - a hint: whatever the folder holds must not fail the caller
            self.warn(f"could not send {what}", exc, cost)


#: a listener's file: ``<port>-<pid>``, ASCII digits only (anything else in the folder is ignored)
_ENTRY = re.compile(r"([0-9]{1,5})-([0-9]{1,10})")


def listed(path: Path) -> list[tuple[int, int, str]]:
    """(port, pid, file name) of each well-formed listener file in ``path``."""
    found = []
    for name in os.listdir(path):
        entry = _ENTRY.fullmatch(name)
        if entry and 0 < int(entry[1]) < 65536:
            found.append((int(entry[1]), int(entry[2]), name))
    return found


def register(path: Path, port: int) -> Path:
    """Name a listening UDP port in ``path`` (after clearing the files of processes gone)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    for _port, pid, name in listed(path):
        if not _alive(pid):
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
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True

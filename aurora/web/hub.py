"""One web process's ear for run changes: a single Redis subscription or UDP port, however many
clients wait, and in-memory watches that waiting requests await (no thread, no connection).

A watch is registered *before* the waiting request reads the run, and the hub keeps the notes
of the last seconds (:attr:`Hub.recent`), so a change that lands between a submit and its
watch is never missed: it is either in ``recent`` or delivered to the watch.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import notify
from ..config import Settings

log = logging.getLogger(__name__)

#: notes kept for watches registered just after the change they wait for
RECENT_MAX, RECENT_SECONDS = 10_000, 30.0
#: seconds a first waiter waits for the subscription before it reads without it
READY_WAIT = 2.0
#: reconnect pauses of the Redis subscription (first, longest)
RECONNECT_FIRST, RECONNECT_MAX = 0.2, 5.0
#: UDP receive buffer: room for bursts of notes while the loop is busy
UDP_BUFFER = 1 << 20


@dataclass(eq=False)
class Watch:
    run_id: str
    event: asyncio.Event = field(default_factory=asyncio.Event)
    types: list[str] = field(default_factory=list)

    def take(self) -> list[str]:
        types, self.types = self.types, []
        self.event.clear()
        return types


class Hub:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.watches: dict[str, set[Watch]] = {}
        self.recent: OrderedDict[str, tuple[float, list[str]]] = OrderedDict()
        #: True while notes arrive (subscribed / listening); waiters re-read more often otherwise
        self.healthy = False
        self.kind = ("redis" if notify.uses_redis(settings) else "udp" if settings.embedded_broker else "none")
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._transport: Any = None
        self.notes = 0

    # -- the waiting side ----------------------------------------------------------------

    @contextlib.contextmanager
    def watch(self, run_id: str) -> Iterator[Watch]:
        watch = Watch(run_id)
        self.watches.setdefault(run_id, set()).add(watch)
        try:
            yield watch
        finally:
            group = self.watches.get(run_id)
            if group is not None:
                group.discard(watch)
                if not group:
                    del self.watches[run_id]

    def seen(self, run_id: str) -> list[str] | None:
        """The event types noted for ``run_id`` in the last seconds, or None."""
        kept = self.recent.get(run_id)
        return kept[1] if kept else None

    def waiting(self) -> int:
        return sum(len(group) for group in self.watches.values())

    # -- the hearing side ----------------------------------------------------------------

    def deliver(self, run_id: str, types: list[str]) -> None:
        self.notes += 1
        now = time.monotonic()
        kept = self.recent.pop(run_id, None)
        self.recent[run_id] = (now, (kept[1] if kept else []) + types)
        while self.recent and (len(self.recent) > RECENT_MAX or next(iter(self.recent.values()))[0] < now - RECENT_SECONDS):
            self.recent.popitem(last=False)
        for watch in self.watches.get(run_id, ()):
            watch.types.extend(types)
            watch.event.set()

    def wake_all(self) -> None:
        """After notes may have been lost (a reconnect): every waiter reads its run again."""
        for group in self.watches.values():
            for watch in group:
                watch.event.set()

    async def start(self) -> None:
        """Begin hearing notes (once); wait a moment for the subscription to stand."""
        if self._task is None and self._transport is None:
            if self.kind == "redis":
                self._task = asyncio.get_running_loop().create_task(self._redis_loop())
            elif self.kind == "udp":
                await self._listen_udp()
            else:
                self._ready.set()
        if not self._ready.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), READY_WAIT)

    async def _redis_loop(self) -> None:
        import redis.asyncio as aioredis

        pause = RECONNECT_FIRST
        name = notify.channel(self.settings)
        while True:
            client = aioredis.Redis.from_url(self.settings.broker_url, socket_connect_timeout=2,
                                             socket_keepalive=True, health_check_interval=15)
            try:
                pubsub = client.pubsub()
                await pubsub.subscribe(name)
                while True:
                    item = await pubsub.get_message(timeout=30.0)
                    if item is None:
                        continue
                    if item["type"] == "subscribe":
                        self.healthy, pause = True, RECONNECT_FIRST
                        self._ready.set()
                        self.wake_all()
                    elif item["type"] == "message" and (note := notify.parse(item["data"])):
                        self.deliver(*note)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis away: waiters re-read until it is back
                if self.healthy:
                    log.warning("lost the subscription to run changes (%s); reconnecting", exc.__class__.__name__)
                self.healthy = False
                self._ready.set()  # waiters go on without notes rather than hang on start()
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(pause)
            pause = min(pause * 2, RECONNECT_MAX)

    async def _listen_udp(self) -> None:
        import socket

        hub = self

        class _Protocol(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                if (note := notify.parse(data)) is not None:
                    hub.deliver(*note)

        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER)
        sock.bind(("127.0.0.1", 0))
        self._transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(_Protocol, sock=sock)
        entry = notify.register(notify.folder(self.settings), sock.getsockname()[1])
        atexit.register(_unlink, entry)
        self.healthy = True
        self._ready.set()


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()

"""kombu's Redis transport, with one Redis client per channel instead of one per command.

Stock kombu builds a new ``redis.Redis`` object for every publish and every acknowledgement
(``Channel.conn_or_acquire``). The connection itself comes from the channel's pool either way,
but building the client object (its table of ~170 response callbacks) was about a fifth of the
cost of sending a run id, and as much again on each ack in a worker. A ``redis.Redis`` client is
safe to share between threads (it takes a connection from its pool for each command), so a
channel keeps one for as long as its pool lives. Everything else is kombu's.

Used for ``redis://`` broker URLs (``broker_transport`` in ``celery_app``); ``rediss://`` keeps
kombu's own transport, which turns TLS on from the URL's scheme name.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis


class Channel(redis.Channel):
    _shared_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        pool = self.pool
        shared = self._shared_client
        if shared is None or shared.connection_pool is not pool:  # the pool is rebuilt after a reconnect
            shared = self._shared_client = self._create_client()
        yield shared


class Transport(redis.Transport):
    Channel = Channel


#: how Celery's ``broker_transport`` names this transport
NAME = f"{__name__}:Transport"

"""Notes on Redis cost a worker one send: ``PUBLISH`` under ``CLIENT REPLY OFF``, never a round
trip (a waited-for reply was a fifth of a dry run's time in a Celery child), and they still reach
every subscriber, also after Redis closed the publisher's connection."""

from __future__ import annotations

import socket
import threading
import time

import redis

from aurora.notify import RedisPublisher


class SilentRedis:
    """A fake Redis on loopback that answers the handshake but never a ``PUBLISH`` (as Redis
    does after ``CLIENT REPLY OFF``, or a Redis too busy to answer soon); it records every
    command."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.commands: list[list[bytes]] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        reader = conn.makefile("rb")
        while True:
            line = reader.readline()
            if not line:
                return
            assert line.startswith(b"*"), line
            args = []
            for _ in range(int(line[1:])):
                size = int(reader.readline()[1:])
                args.append(reader.read(size + 2)[:-2])
            self.commands.append(args)
            if args[0].upper() == b"HELLO":  # RESP3's handshake answers with a map
                conn.sendall(b"%1\r\n+proto\r\n:3\r\n")
            elif args[0].upper() != b"PUBLISH" and args[:3] != [b"CLIENT", b"REPLY", b"OFF"]:
                conn.sendall(b"+OK\r\n")


def test_a_note_is_sent_without_waiting_for_an_answer() -> None:
    fake = SilentRedis()
    publisher = RedisPublisher(f"redis://127.0.0.1:{fake.port}/0", "aurora.changed.test")
    started = time.perf_counter()
    for n in range(20):
        publisher({f"run-{n}": ["run.running", "run.succeeded"]})
    took = time.perf_counter() - started
    deadline = time.monotonic() + 5
    while len([c for c in fake.commands if c[0] == b"PUBLISH"]) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    published = [c for c in fake.commands if c[0] == b"PUBLISH"]
    assert published[0] == [b"PUBLISH", b"aurora.changed.test", b"run-0 run.running,run.succeeded"]
    assert len(published) == 20
    # waiting for each reply would have timed out (0.5 s) on the first note already
    assert took < 0.4, took


def test_notes_reach_a_subscriber_also_after_redis_closed_the_connection(redis_url) -> None:
    client = redis.Redis.from_url(redis_url)
    channel = f"aurora.changed.test-{time.monotonic_ns()}"
    subscriber = client.pubsub()
    subscriber.subscribe(channel)
    assert subscriber.get_message(timeout=2)["type"] == "subscribe"
    publisher = RedisPublisher(redis_url, channel)

    def heard() -> list[bytes]:
        got = []
        while (item := subscriber.get_message(timeout=1)) is not None:
            got.append(item["data"])
        return got

    publisher({"r1": ["run.running", "run.succeeded"], "r2": ["run.queued"]})
    assert heard() == [b"r1 run.running,run.succeeded", b"r2 run.queued"]
    for entry in client.client_list():
        if entry["cmd"] == "publish":  # Redis restarted, or it closed an idle client
            client.client_kill_filter(_id=entry["id"])
    time.sleep(0.1)
    publisher({"r3": ["run.failed"]})
    assert heard() == [b"r3 run.failed"]
    subscriber.close()

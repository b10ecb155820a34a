"""Aurora's kombu Redis transport: one client per channel, and messages still go round."""

from __future__ import annotations

import json

import redis

from aurora.celery_app import QUEUE, make_celery
from aurora.config import load_settings
from aurora.redis_transport import Transport


def _app(env: dict[str, str], redis_url: str):  # type: ignore[no-untyped-def]
    return make_celery(load_settings({**env, "AURORA_BROKER_URL": redis_url}), set_as_current=False)


def test_a_redis_broker_uses_aurora_transport_and_reuses_one_client(env, redis_url) -> None:
    app = _app(env, redis_url)
    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, Transport)
        channel = connection.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
        given = object()
        with channel.conn_or_acquire(given) as passed:
            assert passed is given
        # kombu rebuilds the pool after a reconnect: the client must follow it, not keep the old one
        channel._pool = None
        with channel.conn_or_acquire() as third:
            assert third is not first and third.connection_pool is channel.pool


def test_run_ids_published_through_it_arrive_and_are_acknowledged(env, redis_url) -> None:
    redis.Redis.from_url(redis_url).delete(QUEUE)
    app = _app(env, redis_url)
    for run_id in ("run-1", "run-2", "run-3"):
        app.send_task("aurora.execute_run", args=[run_id])
    with app.connection_for_read() as connection:
        queue = connection.SimpleQueue(QUEUE)
        received = []
        for _ in range(3):
            message = queue.get(timeout=5)
            received.append(json.loads(message.body if isinstance(message.body, str) else message.body.decode())[0][0])
            message.ack()
        queue.close()
    assert received == ["run-1", "run-2", "run-3"]
    client = redis.Redis.from_url(redis_url)
    assert client.llen(QUEUE) == 0
    assert client.hlen("unacked") == 0


def test_other_brokers_keep_their_own_transport(env) -> None:
    app = make_celery(load_settings({**env, "AURORA_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//"}),
                      set_as_current=False)
    assert app.conf.broker_transport is None
    embedded = make_celery(load_settings(env), set_as_current=False)
    assert embedded.conf.broker_transport == "aurora.filesystem_transport:Transport"


def test_a_tls_redis_broker_keeps_kombus_transport_so_tls_stays_on(env) -> None:
    app = make_celery(load_settings({**env, "AURORA_BROKER_URL": "rediss://127.0.0.1:6380/0"}), set_as_current=False)
    assert app.conf.broker_transport is None
    connection = app.connection_for_write()
    assert connection.ssl  # kombu's default for rediss:// without options; ours would have dropped it


def test_a_taken_message_leaves_no_copy_behind_and_a_requeued_one_comes_back(env, redis_url) -> None:
    # No ack emulation (aurora.celery_app.broker_options): taking a message writes nothing more to
    # Redis (kombu's unacked hash and index cost two round trips a run); what a worker that dies
    # held is recovered by the lease and the sweeper (tests/test_recovery.py, tests/test_stack.py),
    # and a message rejected with requeue (a child lost: ``reject_on_worker_lost``) goes back.
    client = redis.Redis.from_url(redis_url)
    client.delete(QUEUE, "unacked", "unacked_index")
    app = _app(env, redis_url)
    app.send_task("aurora.execute_run", args=["run-1"])
    with app.connection_for_read() as connection:
        queue = connection.SimpleQueue(QUEUE)
        message = queue.get(timeout=5)
        assert client.llen(QUEUE) == 0
        assert not client.exists("unacked", "unacked_index")
        message.requeue()
        again = queue.get(timeout=5)
        assert json.loads(again.body if isinstance(again.body, str) else again.body.decode())[0][0] == "run-1"
        again.ack()
        queue.close()
    assert client.llen(QUEUE) == 0 and not client.exists("unacked", "unacked_index")

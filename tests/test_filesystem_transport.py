"""The embedded broker: whole messages or none, and a malformed file never stops a worker."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import missing
from kombu import Connection

from aurora import filesystem_transport


@pytest.fixture(autouse=True)
def not_a_stopping_worker(monkeypatch) -> None:
    """The transport ends its poll when Celery's worker state says "stopping"; this process is no worker."""
    from celery.worker import state

    monkeypatch.setattr(state, "should_stop", None)
    monkeypatch.setattr(state, "should_terminate", None)


def connection(folder: Path, **options: object) -> Connection:
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return Connection("filesystem://", transport=filesystem_transport.NAME, transport_options={
        "data_folder_in": str(folder / "queue"), "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"), "control_folder": str(folder / "control"),
        "store_processed": False, **options})


#: what Celery puts in a message's headers (the transport takes only Celery's JSON messages)
CELERY = {"task": "aurora.execute_run", "id": "1"}

MALFORMED = [
    b"",  # what kombu #1551 leaves behind, and a full disk
    b'{"body": "trunc',
    b"\xff\xfe",
    b"[1, 2]",
    b"{}",
    b'{"properties": {}}',
    b'{"__type__": "uuid", "__value__": "x"}',  # kombu's type hook
    b"[" * 200_000 + b"]" * 200_000,  # a RecursionError in the JSON decoder
    b'{"body": "", "properties": {"delivery_tag": "x", "delivery_info": {}}, "headers": {"task": "t"},'
    b' "content-type": "application/json"}',  # a Celery message without its id
]


def test_a_malformed_message_file_is_set_aside_and_the_next_is_read(tmp_path: Path, caplog) -> None:
    queue = tmp_path / "queue"
    with connection(tmp_path) as conn:
        inbox = conn.SimpleQueue("q")
        for i, content in enumerate(MALFORMED):
            (queue / f"{i:015d}_{uuid.uuid4()}.q.msg").write_bytes(content)
        (queue / f"000000000000100_{uuid.uuid4()}.q.msg").mkdir()
        os.mkfifo(queue / f"000000000000101_{uuid.uuid4()}.q.msg")  # opening it would block the worker for ever
        (queue / f"000000000000102_{uuid.uuid4()}.q.msg").write_bytes(b" " * (2 * 1024 * 1024))
        inbox.put({"n": 1}, headers=CELERY, serializer="json")
        assert inbox.get(timeout=5).payload == {"n": 1}
        assert len(os.listdir(tmp_path / "bad")) == len(MALFORMED) + 3
        assert os.listdir(queue) == [] and os.listdir(tmp_path / "processed") == []
    assert caplog.text.count("set aside a malformed message file") == len(MALFORMED) + 3


def test_a_removed_queue_folder_is_made_again(tmp_path: Path) -> None:
    import shutil

    with connection(tmp_path) as conn:
        inbox = conn.SimpleQueue("q")
        shutil.rmtree(tmp_path / "queue")
        shutil.rmtree(tmp_path / "processed")
        with pytest.raises(inbox.Empty):
            inbox.get(timeout=0.5)
        inbox.put({"n": 2}, headers=CELERY, serializer="json")
        assert inbox.get(timeout=2).payload == {"n": 2}


def test_messages_keep_their_order_across_a_power_of_ten_of_the_clock(tmp_path: Path, monkeypatch) -> None:
    from aurora import filesystem_transport as transport

    with connection(tmp_path) as conn:
        inbox = conn.SimpleQueue("q")
        for n, clock in ((1, 9_999.998), (2, 10_000.001)):  # 9999998 ms, then 10000001 ms
            monkeypatch.setattr(transport, "monotonic", lambda clock=clock: clock)
            inbox.put({"n": n}, headers=CELERY, serializer="json")
        monkeypatch.undo()
        assert [inbox.get(timeout=2).payload["n"] for _ in range(2)] == [1, 2]


def test_readers_never_see_a_partial_message_while_writers_publish(tmp_path: Path) -> None:
    count, got, problems = 400, [], []

    def publish(offset: int) -> None:
        try:
            with connection(tmp_path) as conn:
                inbox = conn.SimpleQueue("q")
                for i in range(count // 2):
                    inbox.put({"n": offset + i, "pad": "x" * 20_000}, headers=CELERY, serializer="json")
        except Exception as exc:  # noqa: BLE001 - the test reports it
            problems.append(f"publish: {exc!r}")  # big enough to be written in pieces

    def read() -> None:
        with connection(tmp_path) as conn:
            inbox = conn.SimpleQueue("q")
            while len(got) < count:
                try:
                    message = inbox.get(timeout=30)
                except Exception as exc:  # noqa: BLE001 - the test reports it
                    problems.append(repr(exc))
                    return
                got.append(message.payload["n"])
                message.ack()

    # The queue is bound before anyone publishes, as a worker has bound it in a running stack:
    # kombu writes the exchange's binding file in place, and a publisher that reads it while a
    # second connection creates it finds no binding and sends to the dead-letter queue.
    with connection(tmp_path) as conn:
        conn.SimpleQueue("q")
    threads = [threading.Thread(target=read), threading.Thread(target=publish, args=(0,)),
               threading.Thread(target=publish, args=(count // 2,))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert problems == [] and sorted(got) == list(range(count)), (problems, len(got))
    assert not (tmp_path / "bad").exists()


@pytest.fixture
def tiny_disk(tmp_path: Path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode:
        missing(f"a small tmpfs for a full disk: {mounted.stderr.decode().strip()} (needs root)")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_a_publish_on_a_full_disk_fails_and_leaves_no_file(tiny_disk: Path) -> None:
    with connection(tiny_disk) as conn:
        inbox = conn.SimpleQueue("q")
        with pytest.raises(Exception, match="cannot add a message"):
            for i in range(100):
                inbox.put({"n": i, "pad": "x" * 10_000}, headers=CELERY, serializer="json")
        sizes = [p.stat().st_size for p in (tiny_disk / "queue").iterdir()]
        assert all(sizes) and not any(p.name.endswith(".tmp") for p in (tiny_disk / "queue").iterdir())
        whole = len(sizes)
        for _ in range(whole):  # every message that was stored is read back whole
            assert inbox.get(timeout=2).payload["pad"] == "x" * 10_000


def _consume_in_thread(folder: Path, got: list, timeout: float = 20) -> threading.Thread:
    """A consumer that polls only every 10 s, waiting for one message in a thread of its own."""

    def consume() -> None:
        with connection(folder, wake_folder=str(folder / "wake"), polling_interval=10) as conn:
            message = conn.SimpleQueue("q").get(timeout=timeout)
            got.append((time.monotonic(), message.payload))

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not (folder / "wake").is_dir() or not os.listdir(folder / "wake"):  # its port is named
        assert time.monotonic() < deadline, "the consumer never named its wake-up port"
        time.sleep(0.01)
    time.sleep(0.2)  # past its first poll: it waits on its port now
    return thread


def _put_and_see_it_taken_at_once(folder: Path, n: int) -> None:
    """A consumer waits (polling every 10 s); a put must reach it long before its next poll."""
    got: list = []
    thread = _consume_in_thread(folder, got)
    with connection(folder, wake_folder=str(folder / "wake")) as conn:
        sent = time.monotonic()
        conn.SimpleQueue("q").put({"n": n}, headers=CELERY, serializer="json")
    thread.join(15)
    assert got and got[0][1] == {"n": n}
    assert got[0][0] - sent < 5, "the message waited for the 10 s poll: the put woke nobody"


def test_a_waiting_consumer_is_woken_by_a_put_not_by_its_next_poll(tmp_path: Path) -> None:
    _put_and_see_it_taken_at_once(tmp_path, 1)


def test_forged_wake_ups_cost_a_poll_and_nothing_else(tmp_path: Path) -> None:
    import socket

    got: list = []
    thread = _consume_in_thread(tmp_path, got)
    port = int(os.listdir(tmp_path / "wake")[0].split("-")[0])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as forger:
        for data in (b"w", b"", b"x" * 60000, b"\x00" * 10):
            forger.sendto(data, ("127.0.0.1", port))
    time.sleep(0.3)
    assert thread.is_alive() and not got  # woken, found nothing, waiting again
    with connection(tmp_path, wake_folder=str(tmp_path / "wake")) as conn:
        conn.SimpleQueue("q").put({"n": 2}, headers=CELERY, serializer="json")
    thread.join(15)
    assert got and got[0][1] == {"n": 2}


def test_a_put_that_wakes_nobody_is_still_found_by_the_poll(tmp_path: Path) -> None:
    (tmp_path / "wake").mkdir()
    (tmp_path / "wake" / f"9-{os.getpid()}").touch()  # a port nobody listens on (a consumer gone)
    with connection(tmp_path, wake_folder=str(tmp_path / "wake")) as conn:
        conn.SimpleQueue("q").put({"n": 3}, headers=CELERY, serializer="json")
    with connection(tmp_path, polling_interval=0.05) as conn:
        assert conn.SimpleQueue("q").get(timeout=5).payload == {"n": 3}


def test_a_consumer_that_cannot_name_its_port_polls_instead(tmp_path: Path, caplog) -> None:
    (tmp_path / "not-a-folder").write_text("")  # where the wake folder should be: a full disk fails alike
    wake = str(tmp_path / "not-a-folder" / "wake")
    got: list = []

    def consume() -> None:
        with connection(tmp_path, wake_folder=wake, polling_interval=0.05) as conn:
            got.append(conn.SimpleQueue("q").get(timeout=10).payload)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    time.sleep(0.3)  # waiting, by polling
    with connection(tmp_path, wake_folder=wake) as conn:
        conn.SimpleQueue("q").put({"n": 4}, headers=CELERY, serializer="json")
    thread.join(10)
    assert got == [{"n": 4}]
    assert "no wake-up port" in caplog.text and "find the message at their next poll" in caplog.text


def test_a_consumer_at_its_prefetch_limit_takes_the_next_message_once_one_is_settled(tmp_path: Path) -> None:
    """As a Celery worker does: one message prefetched, settled by another thread; the next must
    not wait for the (here 10 s) poll — the backlog of a stack that was down drains at once."""
    import queue as queues

    from kombu import Consumer, Exchange, Queue

    wake = str(tmp_path / "wake")
    with connection(tmp_path, wake_folder=wake) as producer:
        inbox = producer.SimpleQueue("q")
        for n in range(20):
            inbox.put({"n": n}, headers=CELERY, serializer="json")
    handed: queues.Queue = queues.Queue()
    settled: list[int] = []

    def settle() -> None:
        while len(settled) < 20:
            message = handed.get(timeout=30)
            time.sleep(0.02)  # the run
            message.ack()
            settled.append(message.payload["n"])

    threading.Thread(target=settle, daemon=True).start()
    started = time.monotonic()
    with connection(tmp_path, wake_folder=wake, polling_interval=10) as conn:
        channel = conn.channel()
        channel.basic_qos(0, 1, False)
        with Consumer(channel, [Queue("q", Exchange("q"), "q")], callbacks=[lambda _body, message: handed.put(message)]):
            while len(settled) < 20 and time.monotonic() - started < 60:
                try:
                    conn.drain_events(timeout=1)
                except TimeoutError:
                    pass
    assert sorted(settled) == list(range(20))
    assert time.monotonic() - started < 10, "each message waited for a poll after the one before was settled"


def test_files_that_name_no_port_in_the_wake_folder_stop_neither_a_put_nor_a_consumer(tmp_path: Path) -> None:
    wake = tmp_path / "wake"
    wake.mkdir()
    for name in ("1-\u00b2", "\u00b2-1", "1-99999999999999999999", "99999-1", "0-1", "junk", "7-x"):
        (wake / name).touch()
    _put_and_see_it_taken_at_once(tmp_path, 6)


def test_a_consumer_in_a_process_with_more_than_1024_descriptors_is_woken(tmp_path: Path) -> None:
    """select() refuses a descriptor past 1,023; a worker with many open files must still wait."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(2048, hard), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        _put_and_see_it_taken_at_once(tmp_path, 7)
    finally:
        for fd in held:
            os.close(fd)

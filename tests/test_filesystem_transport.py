"""The embedded broker: whole messages or none, and a malformed file never stops a worker."""

from __future__ import annotations

import os
import subprocess
import threading
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


def connection(folder: Path) -> Connection:
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return Connection("filesystem://", transport=filesystem_transport.NAME, transport_options={
        "data_folder_in": str(folder / "queue"), "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"), "control_folder": str(folder / "control"),
        "store_processed": False})


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

"""kombu's filesystem transport, made safe for the embedded default: no reader ever sees a
partial message, and a malformed one is set aside instead of killing the worker.

Stock kombu (5.7) creates a message file under its final name and writes it afterwards, so a
worker polling the folder can read it empty and die with ``Unrecoverable error:
JSONDecodeError`` (kombu issue #1551); a full disk leaves 0-byte files that kill the worker
again on every restart. Here:

- ``_put`` writes to a hidden temporary name in the same folder and renames it into place, so a
  message appears whole or not at all (rename is atomic on one file system). A failed write
  (disk full) removes the temporary file and raises, and the run stays queued in the database
  for the sweeper to send again. No fsync: after a power loss a renamed but empty file is set
  aside like any malformed one, and the database, not the broker, holds the run.
- ``_get`` claims a file by renaming it into the processed folder (on the same file system, so
  two workers never take the same file), reads it and deletes it. A file that is not a whole
  JSON message is moved to ``bad/`` beside the queue folder, logged once, and the next file is
  read.

And a consumer that is woken instead of polling: kombu polls the folder every
``polling_interval``, so a message waited half an interval on average before a worker saw it.
Each consumer here names a loopback UDP port in the broker's ``wake/`` folder (as the web's
listeners do in ``notify/``), and ``_put`` sends each one a datagram once the message is in
place; the consumer waits on its port between polls. A datagram is only a hint (a forged one
costs a poll, a lost one the rest of the interval, which stays the safety net).

And a worker that stops when asked: the filesystem transport cannot wake a waiting consumer, so
Celery runs it in its blocking loop, each turn polling the folder for up to two seconds; on
SIGTERM Celery only sets a flag (``state.should_stop``) that the loop reads between turns, and it
runs one more turn after seeing it, so an idle worker sat up to four seconds in two polls after
"Warm shutdown". ``drain_events`` here looks at that flag on every poll and ends the wait at once;
runs in flight are still drained by Celery.

Offered upstream with kombu #1551; the change is ``_put`` and ``_get``.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import stat
import uuid
from functools import cache
from pathlib import Path
from queue import Empty
from time import monotonic, sleep
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem, virtual
from kombu.utils.json import dumps, loads

log = logging.getLogger(__name__)

#: the folder, beside the queue folder, where malformed message files are set aside
BAD_FOLDER = "bad"
#: a message file larger than this is not one of Aurora's (they carry a run id)
MAX_MESSAGE_BYTES = 1024 * 1024


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        folder = Path(self.data_folder_out)
        # kombu orders messages by this name; the leading dot keeps the temporary file out of
        # every reader's listing (a reader matches names ending in ".<queue>.msg" after the first dot).
        # Zero-padded: names sort as text, and an unpadded count would put 10000000 before 9999999.
        name = f"{int(round(monotonic() * 1000)):015d}_{uuid.uuid4()}.{queue}.msg"
        temporary = folder / f".{name}.tmp"
        try:
            with open(temporary, "wb") as handle:
                handle.write(dumps(payload).encode())
            os.replace(temporary, folder / name)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise ChannelError(f"cannot add a message to {folder}: {exc.strerror or exc}") from exc
        wake = self.transport_options.get("wake_folder")
        if wake:
            _waker(wake).send([b"w"], "a wake-up to the workers", "they find the message at their next poll")

    # A consumer at its prefetch limit takes nothing more until a message is settled; settling
    # rings its own port, so it takes the next at once instead of at its next poll.
    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        super().basic_ack(delivery_tag, multiple)
        self.connection.ring()

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        super().basic_reject(delivery_tag, requeue)
        self.connection.ring()

    def _get(self, queue: str) -> Any:
        folder = Path(self.data_folder_in)
        wanted = f"{queue}.msg"
        claimed_folder = Path(self.processed_folder)
        try:
            names = sorted(os.listdir(folder))
            claimed_folder.mkdir(parents=True, exist_ok=True)
        except FileNotFoundError:
            folder.mkdir(parents=True, exist_ok=True)  # someone removed the folder: nothing waits
            raise Empty() from None
        for name in names:
            if name.partition(".")[2] != wanted:
                continue
            claimed = claimed_folder / name
            try:
                os.replace(folder / name, claimed)  # only one reader wins the rename
            except OSError:
                continue  # another worker took it
            message, problem = self._read(claimed)
            if message is None:
                self._set_aside(claimed, folder, problem)
                continue
            claimed.unlink(missing_ok=True)
            return message
        raise Empty()

    def _read(self, path: Path) -> tuple[dict[str, Any] | None, str]:
        """The message in ``path``, or None and why it is not one of Aurora's messages.

        Only what Celery's JSON protocol 2 sends is taken: anything else (a directory, a FIFO that
        would block the read for ever, a huge file, JSON nested to a RecursionError, an envelope
        kombu or Celery would fail on) is a file to set aside, never a reason for the worker to stop.
        """
        try:
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode):
                return None, "not a regular file"
            if info.st_size > MAX_MESSAGE_BYTES:
                return None, f"{info.st_size} bytes, more than {MAX_MESSAGE_BYTES}"
            if info.st_size == 0:
                return None, "empty"
            raw = path.read_bytes()
            message = loads(raw.decode())
        except json.JSONDecodeError as exc:
            return None, f"not JSON: {exc.msg}"
        except Exception as exc:  # noqa: BLE001 - whatever a file holds must not stop the worker
            return None, f"unreadable: {exc.__class__.__name__}"
        if not _is_envelope(message):
            return None, "not a message envelope"
        try:
            self.Message(message, channel=self)  # what kombu does next: it must not fail there
        except Exception as exc:  # noqa: BLE001
            return None, f"not a message envelope: {exc.__class__.__name__}"
        return message, ""

    @staticmethod
    def _set_aside(path: Path, folder: Path, problem: str) -> None:
        bad = folder.parent / BAD_FOLDER
        try:
            bad.mkdir(exist_ok=True)
            os.replace(path, bad / path.name)
            where = f"; kept in {bad / path.name}"
        except OSError:
            try:
                if path.is_dir() and not path.is_symlink():
                    os.rmdir(path)
                else:
                    path.unlink(missing_ok=True)
            except OSError:
                pass
            where = "; removed"
        log.error("broker: set aside a malformed message file %s (%s)%s", path.name, problem, where)


def _is_envelope(message: Any) -> bool:
    """Celery's JSON protocol 2 message, as Aurora's producers send it."""
    if not isinstance(message, dict) or not isinstance(message.get("body"), str):
        return False
    properties, headers = message.get("properties"), message.get("headers")
    return (isinstance(properties, dict) and "delivery_tag" in properties
            and isinstance(properties.get("delivery_info"), dict)
            and isinstance(headers, dict) and isinstance(headers.get("task"), str)
            and isinstance(headers.get("id"), str)
            and message.get("content-type") == "application/json")


@cache
def _waker(folder: str) -> Any:
    from .notify import LocalPublisher

    return LocalPublisher(Path(folder))


class Bell:
    """This process's port in the wake folder: waiting on it ends when a message was put."""

    def __init__(self, folder: Path):
        from .notify import register

        self.pid = os.getpid()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind(("127.0.0.1", 0))
            self.sock.setblocking(False)
            # poll, not select: a process may hold more than 1,024 descriptors
            self.poller = select.poll()
            self.poller.register(self.sock, select.POLLIN)
            register(folder, self.sock.getsockname()[1])
        except OSError:
            self.sock.close()
            raise

    def ring(self) -> None:
        """End a wait of this process at once (from another thread of it)."""
        try:
            self.sock.sendto(b"a", self.sock.getsockname())
        except OSError:
            pass  # a full buffer: a wake-up is already waiting

    def wait(self, seconds: float) -> None:
        """Until a datagram comes or ``seconds`` pass; the datagrams waiting are taken."""
        if self.poller.poll(seconds * 1000):
            try:
                for _ in range(256):  # bounded: a flood of datagrams must not keep it from polling
                    self.sock.recv(64)
            except BlockingIOError:
                pass


def _stopping() -> bool:
    # Imported late: web processes publish through this transport and never load the worker.
    from celery.worker import state

    # The flags hold an exit code, and a clean stop's is 0: test for "set", as Celery does.
    return any(flag is not None and flag is not False for flag in (state.should_stop, state.should_terminate))


class Transport(filesystem.Transport):
    """One broker state (declared exchanges and bindings) per broker folder.

    kombu keeps one for the whole process, so a second broker folder in the same process (tests,
    a bench) believed its bindings already written and sent every message to the dead-letter queue.
    """

    Channel = Channel
    _states: dict[str, virtual.BrokerState] = {}

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        folder = str((client.transport_options or {}).get("control_folder", "control"))
        self.state = self._states.setdefault(folder, virtual.BrokerState())

    @property
    def default_connection_params(self) -> dict[str, Any]:
        # A folder has no host: kombu's default of "localhost" only made every process warn
        # "No hostname was supplied" at start.
        return {}

    _bell: Bell | None = None
    _bell_failed = float("-inf")

    def bell(self) -> Bell | None:
        """This consumer's wake-up port, made on its first wait (in the process that waits).
        None while it cannot be made (a full disk, no loopback): the consumer polls meanwhile,
        and tries again a minute later."""
        folder = (self.client.transport_options or {}).get("wake_folder")
        if not folder or (self._bell is not None and self._bell.pid == os.getpid()):
            return self._bell
        if monotonic() - self._bell_failed < 60:
            return None
        try:
            self._bell = Bell(Path(folder))
        except Exception as exc:  # noqa: BLE001 - without a port the consumer polls; it must never stop
            self._bell, self._bell_failed = None, monotonic()
            log.warning("broker: no wake-up port in %s (%s); polling every %s s until there is one",
                        folder, getattr(exc, "strerror", None) or exc.__class__.__name__, self.polling_interval)
        return self._bell

    def ring(self) -> None:
        if self._bell is not None and self._bell.pid == os.getpid():
            self._bell.ring()

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        start = monotonic()
        interval = self.polling_interval
        if timeout and interval and interval > timeout:
            interval = timeout
        bell = self.bell()
        while True:
            try:
                self.cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                if _stopping() or (timeout is not None and monotonic() - start >= timeout):
                    raise TimeoutError() from None  # socket.timeout, which Celery expects
                if interval is not None:
                    if bell is not None:
                        bell.wait(interval)
                    else:
                        sleep(interval)


#: how Celery's ``broker_transport`` names this transport
NAME = f"{__name__}:Transport"

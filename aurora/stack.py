"""``aurora up``: migrate, make the first admin key, then supervise web, workers and beat.

The supervisor (``run_stack``) keeps any number of named children running:

- a child that exits while the stack is not stopping is started again, after 0.5 s, then 1, 2,
  4 … 30 s while it keeps failing; each restart is one log line and one count in
  ``aurora_supervisor_restarts_total{process}``. A child that exits ``MAX_FAST_EXITS`` times
  within ``FAST_EXIT_WINDOW`` seconds is broken, not unlucky: the stack stops with a message.
- SIGTERM or Ctrl-C sends SIGTERM to each child's *main* process only, so that Celery's warm
  shutdown finishes the runs in flight and the web finishes its requests (a SIGTERM to the whole
  process group killed Celery's pool processes mid-run). A child still there after the grace
  period (the run lease, ``AURORA_LEASE_SECONDS``), or any child after a second signal, gets
  SIGKILL with its whole process group.
- each child asks the kernel for SIGTERM when ``aurora up`` dies, even by SIGKILL
  (``prctl(PR_SET_PDEATHSIG)``), so no orphan keeps the ports. That call is Linux-only; elsewhere
  the children run without it (stop them yourself if the supervisor is killed).

Before starting anything, ``claim_home`` takes an exclusive lock on ``$AURORA_HOME/up.lock`` and
``listen`` binds every port (a second stack fails with a clear message and touches nothing of
the first's). The supervisor keeps those sockets for the life of the stack and hands them to
the web processes it starts (aurora/web/server.py): a connection made while the web restarts
waits in the kernel's queue. A child given a heartbeat (the web) that stops beating for
``HANG_SECONDS`` is killed and started again, as gunicorn's master did with a stuck worker.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .config import Settings
from .errors import ConfigError

#: exits of one child within FAST_EXIT_WINDOW seconds after which the supervisor gives up
MAX_FAST_EXITS = 5
#: seconds over which a child's exits count as "fast"
FAST_EXIT_WINDOW = 60.0
#: first restart delay in seconds; doubled for each further exit within the window
RESTART_DELAY = 0.5
#: longest restart delay in seconds
MAX_RESTART_DELAY = 30.0
#: seconds without a heartbeat after which a child is taken for stuck and killed (gunicorn's
#: default worker timeout)
HANG_SECONDS = 30.0

_PR_SET_PDEATHSIG = 1


def gunicorn_command(binds: Sequence[str], workers: int, threads: int = 4) -> list[str]:
    # -P and aurora.gunicorn_main: the current directory can never shadow the installed package
    command = [sys.executable, "-P", "-m", "aurora.gunicorn_main", "--worker-class", "aurora.web.worker.Worker",
               "--workers", str(workers), "--threads", str(threads), "--graceful-timeout", "10", "--no-control-socket"]
    for bind in binds:
        command += ["--bind", bind]
    return [*command, "--config", "python:aurora.gunicorn_conf", "aurora.web.asgi:app"]


def prepare(settings: Settings, url: str) -> str | None:
    """Migrate the database; on first start make an admin key, store it for the CLI, return it."""
    from . import keys
    from .cli_config import write_config
    from .migrations import upgrade
    from .models import Role
    from .policy_ledger import record_start
    from .runtime import get_runtime

    settings.home.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    db = get_runtime().db
    record_start(db, get_runtime().policies)  # an edit made while the stack was stopped goes on record
    from .federation import vault

    vault.seal_plaintext(db, settings.federation_secret_path)
    get_runtime().identity  # noqa: B018 - the node's federation key pair, made on first start
    if keys.any_admin(db):
        return None
    name = "admin"
    existing = {k["name"] for k in keys.listing(db)}
    suffix = 1
    while name in existing:
        suffix += 1
        name = f"admin-{suffix}"
    key = keys.create(db, name, Role.ADMIN)
    write_config(url, key)
    return key


# -- before anything starts --------------------------------------------------------------------

def claim_home(home: Path) -> IO[str]:
    """Lock ``home`` for this ``aurora up``; the lock lasts as long as the returned file is open
    (the kernel drops it when the process ends, however it ends)."""
    home.mkdir(parents=True, exist_ok=True)
    handle = open(home / "up.lock", "a+")  # noqa: SIM115 - held open for the life of the stack
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise ConfigError(f"another `aurora up` (pid {holder}) is running on AURORA_HOME={home}; "
                          "stop it first, or give this one its own AURORA_HOME") from exc
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


#: connections the kernel queues on a listening socket while no web process accepts (gunicorn's default)
BACKLOG = 2048


def listen(host: str, ports: Sequence[int]) -> list[socket.socket]:
    """Bind and listen on every port of ``host``: the stack's sockets, held by the supervisor for
    as long as it runs and inherited by each web process it starts. Raise ConfigError naming the
    first port that cannot be bound (the ones bound before it are closed again)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    twice = sorted({port for port in ports if list(ports).count(port) > 1})
    if twice:
        raise ConfigError(f"port {twice[0]} is given twice; nothing was started. Give each --port once")
    sockets: list[socket.socket] = []
    try:
        for port in ports:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            # As gunicorn binds: a port in TIME_WAIT after a stop is free, one being listened on is not.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    why = "is already in use (another Aurora stack, or another program: " \
                          f"`ss -ltnp 'sport = :{port}'` shows which)"
                else:
                    why = f"cannot be used: {exc.strerror}"
                raise ConfigError(f"port {port} on {host} {why}; nothing was started. Stop that program, "
                                  "or choose other ports with --port") from exc
            sock.listen(BACKLOG)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


# -- the children ------------------------------------------------------------------------------

def _die_with_parent() -> Callable[[], None] | None:
    """A preexec function that asks for SIGTERM when the supervisor dies; None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the supervisor died before prctl: the signal would never come
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


#: a child's log file larger than this at start is moved to ``NAME.log.1`` (replacing the one before)
LOG_ROTATE_BYTES = 10 * 1024 * 1024


def log_files(folder: Path, names: Sequence[str]) -> dict[str, Path]:
    """One log file per child under ``folder`` (made 0700); a large one is rotated once at start."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {name: folder / f"{name}.log" for name in names}
    for path in files.values():
        if path.exists() and path.stat().st_size > LOG_ROTATE_BYTES:
            path.replace(path.with_name(path.name + ".1"))
    return files


def tail(path: Path | None, lines: int) -> list[str]:
    """The last ``lines`` lines of a log file (empty when there is none)."""
    if path is None or not path.exists():
        return []
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - 64 * 1024))
        return handle.read().decode("utf-8", "replace").splitlines()[-lines:]


@dataclass
class Child:
    name: str
    command: list[str]
    proc: subprocess.Popen | None = None
    exits: deque[float] = field(default_factory=deque)
    restarts: int = 0
    start_at: float = 0.0  # when a child that exited may start again (monotonic)
    log: Path | None = None  # where its stdout and stderr go; None: the supervisor's own
    inherits: tuple[int, ...] = ()  # descriptors it gets under the same numbers (listening sockets)
    heartbeat: int | None = None  # a file the child's mtime is set on (to time.monotonic()) while it works
    stop_grace: float | None = None  # seconds it gets to stop before SIGKILL (None: the stack's grace)

    def start(self, preexec: Callable[[], None] | None) -> None:
        fds = (*self.inherits, *(() if self.heartbeat is None else (self.heartbeat,)))
        if self.heartbeat is not None:
            beat_on(self.heartbeat)  # its time to start counts as a beat
        # Its own session: Ctrl-C in the terminal reaches the supervisor only, which decides.
        if self.log is None:
            self.proc = subprocess.Popen(self.command, start_new_session=True, preexec_fn=preexec, pass_fds=fds)
            return
        with open(self.log, "ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(self.command, start_new_session=True, preexec_fn=preexec, pass_fds=fds,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

    def silent_for(self) -> float:
        """Seconds since the child's last heartbeat (0 for a child without one)."""
        if self.heartbeat is None or not self.alive():
            return 0.0
        return time.monotonic() - os.fstat(self.heartbeat).st_mtime

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int, group: bool = False) -> None:
        if self.proc is None:
            return
        try:
            if group:
                os.killpg(self.proc.pid, sig)  # the group id is the child's pid (its own session)
            elif self.proc.poll() is None:
                self.proc.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass


def beat_on(fd: int) -> None:
    """A heartbeat: the file's mtime set to the monotonic clock, which every process of the
    machine reads alike and which no change of the wall clock moves (as gunicorn's WorkerTmp)."""
    now = time.monotonic()
    os.utime(fd, (now, now))


def heartbeat_file(folder: Path) -> int:
    """A descriptor for a child's heartbeat: a file in ``folder`` (the stack's home, which must be
    writable anyway), unlinked at once, so nothing is left behind on disk."""
    import tempfile

    with tempfile.TemporaryFile(dir=folder) as handle:
        return os.dup(handle.fileno())


def _say(message: str) -> None:
    print(f"aurora: {message}", file=sys.stderr, flush=True)


def _count_restart(name: str, pid: int) -> None:
    try:
        from .metrics import process_exited, supervisor_restarted

        supervisor_restarted(name)
        process_exited(pid)  # its live gauges go with it (under gunicorn, its child_exit hook does this)
    except Exception as exc:  # noqa: BLE001 - a metric must never stop the supervisor
        _say(f"could not count the restart of {name}: {exc}")


class _Signals:
    """SIGTERM/SIGINT: the first asks for a graceful stop, the second for an immediate one."""

    def __init__(self) -> None:
        self.count = 0
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.count += 1


@dataclass
class Webs:
    """What the web processes get from the supervisor: the listening sockets (the supervisor
    holds them and closes them first when the stack stops, so that a stopping stack refuses new
    connections instead of queueing them), a heartbeat file each (by child name), the silence
    after which one is taken for stuck, and how long a stopping one may take."""

    sockets: list[socket.socket]
    heartbeats: dict[str, int]
    hang: float = HANG_SECONDS
    stop_grace: float = 15.0


def run_stack(commands: dict[str, list[str]], grace: float = 60.0, logs: dict[str, Path] | None = None,
              ready: Callable[[], bool] | None = None, on_ready: Callable[[], None] | None = None,
              webs: Webs | None = None) -> int:
    """Run every command as a supervised child until a signal or a child that keeps failing.

    ``logs`` sends a child's output to its file instead of this terminal. ``on_ready`` is called
    once, the first time ``ready()`` (asked every loop until then) is true. The children named in
    ``webs.heartbeats`` inherit its sockets and must keep beating (``beat_on``), or are killed
    after ``webs.hang`` seconds of silence. Return 0 after a stop by signal, 1 when the
    supervisor gave up on a child.
    """
    preexec = _die_with_parent()
    signals = _Signals()
    beats = webs.heartbeats if webs else {}
    fds = tuple(sock.fileno() for sock in webs.sockets) if webs else ()
    hang = webs.hang if webs else HANG_SECONDS
    children = [Child(name, list(cmd), log=(logs or {}).get(name), inherits=fds if name in beats else (),
                      heartbeat=beats.get(name), stop_grace=webs.stop_grace if webs and name in beats else None)
                for name, cmd in commands.items()]
    code = 0
    announced = on_ready is None
    try:
        for child in children:
            child.start(preexec)
        while not signals.count:
            if not announced and (ready is None or ready()):
                announced = True
                on_ready()  # type: ignore[misc]
            now = time.monotonic()
            for child in children:
                if child.proc is not None and child.proc.poll() is not None:
                    failed = _on_exit(child, now)
                    if failed:
                        code = 1
                        break
                elif child.proc is None and now >= child.start_at:
                    child.start(preexec)
                elif (silent := child.silent_for()) > hang:
                    _say(f"{child.name} (pid {child.proc.pid}) gave no sign of life for {silent:.0f} s "  # type: ignore[union-attr]
                         "(its event loop is stuck): killing it")
                    child.signal(signal.SIGKILL, group=True)  # the next round sees the exit and restarts it
            if code:
                break
            time.sleep(0.1)
    finally:
        for sock in webs.sockets if webs else ():
            sock.close()  # the webs close theirs as they stop: from now on a connection is refused
        _stop(children, signals, grace)
    return code


def _on_exit(child: Child, now: float) -> bool:
    """Schedule the restart of a child that exited; True when it failed too often."""
    assert child.proc is not None
    returncode, pid = child.proc.returncode, child.proc.pid
    child.signal(signal.SIGKILL, group=True)  # what it left behind, if anything, holds no port
    child.proc = None
    child.exits.append(now)
    while child.exits and now - child.exits[0] > FAST_EXIT_WINDOW:
        child.exits.popleft()
    how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with code {returncode}"
    if len(child.exits) >= MAX_FAST_EXITS:
        where = f"The end of {child.log}, below," if child.log else "Its log lines above"
        _say(f"{child.name} (pid {pid}) {how}; it exited {len(child.exits)} times within "
             f"{FAST_EXIT_WINDOW:.0f} s, so it is not restarted again: stopping the stack. "
             f"{where} say why; fix that and run `aurora up` again.")
        _show_tail(child, 20)
        return True
    delay = min(RESTART_DELAY * 2 ** (len(child.exits) - 1), MAX_RESTART_DELAY)
    child.restarts += 1
    child.start_at = now + delay
    _say(f"{child.name} (pid {pid}) {how}; restarting it in {delay:g} s (restart {child.restarts})"
         + (f"; its last lines, from {child.log}:" if child.log else ""))
    _show_tail(child, 5)
    _count_restart(child.name, pid)
    return False


def _show_tail(child: Child, lines: int) -> None:
    for line in tail(child.log, lines):
        print(f"  | {line}", file=sys.stderr, flush=True)


def _stop(children: list[Child], signals: _Signals, grace: float) -> None:
    """SIGTERM to each main process; SIGKILL to a child's group after its ``stop_grace`` (else
    ``grace``) seconds, or to all after a second signal."""
    alive = [c for c in children if c.alive()]
    if alive:
        _say("stopping: " + ", ".join(c.name for c in alive) + " (finishing what is in flight; "
             "Ctrl-C again to stop at once)")
    first = signals.count  # 0 when the supervisor gave up: then the first Ctrl-C stops at once
    for child in alive:
        child.signal(signal.SIGTERM)
    started = time.monotonic()
    while any(c.alive() for c in alive):
        now = time.monotonic()
        late = [c for c in alive if c.alive() and (signals.count > first or now - started >= (c.stop_grace or grace))]
        if late:
            _say("stopping at once: " + ", ".join(c.name for c in late))
            for child in late:
                child.signal(signal.SIGKILL, group=True)
            for child in late:
                child.proc.wait()  # type: ignore[union-attr]
            continue  # the others keep their time (a stuck web does not cut a run in flight short)
        time.sleep(0.05)
    for child in children:
        child.signal(signal.SIGKILL, group=True)  # leftovers of a main process that is gone

"""The web's process under ``aurora up``: uvicorn serving aurora/web/asgi.py on sockets it inherits.

``aurora up``'s supervisor is the embedded stack's process manager: it binds the listening
sockets once and keeps them for as long as the stack runs (a connection made while the web
restarts waits in the kernel's queue), starts ``--web-workers`` of these processes on them,
restarts one that exits and kills one that stopped beating (below). Under it, gunicorn's master
did nothing the supervisor does not, and cost a Python process of ~31 MB with gunicorn loaded in
the web as well (docs/benchmarks.md, memory). ``aurora serve`` and the systemd unit keep gunicorn
(``aurora/web/worker.py``), whose worker runs the same uvicorn server with the same settings
(``SERVER_SETTINGS``), protocol and app: only who starts and watches the process differs.

The heartbeat is gunicorn's worker timeout, kept: a task on the event loop touches a file the
supervisor gave it every ``BEAT_SECONDS``; a loop that is stuck (or a process that takes too long to start)
stops touching it, and the supervisor kills the process after ``aurora up --web-timeout``
seconds (30, gunicorn's default) and starts another.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import threading
import time
from typing import Any

#: uvicorn's settings wherever Aurora's web runs. The client address is the peer's: no proxy
#: header may change it (sign-in throttling keys on it). No lifespan events: the app needs none.
#: aurora/web/protocol.py: uvicorn's httptools protocol, each answer in one write.
SERVER_SETTINGS: dict[str, Any] = {"loop": "asyncio", "http": "aurora.web.protocol:OneWrite", "proxy_headers": False,
                                   "lifespan": "off", "server_header": False}
#: seconds between two heartbeats of the event loop (one futimens call)
BEAT_SECONDS = 1
#: seconds a stop lets requests in flight finish (gunicorn's ``--graceful-timeout`` in aurora up)
GRACEFUL_SECONDS = 10
#: seconds an idle keep-alive connection stays open (gunicorn's default ``--keep-alive``)
KEEP_ALIVE_SECONDS = 2


def settle(app: Any, threads: int) -> None:
    """Once the app is loaded, before the first request (here and in gunicorn's worker)."""
    configure = getattr(app, "configure", None)
    if configure is not None:
        configure(threads)
    # What start-up made (modules, the app, SQLAlchemy's and the router's tables: ~100,000
    # objects) lives as long as the process: out of the collector's sight, a full collection
    # looks at what requests made since, instead of pausing every request of the process for
    # all of it (measured: 0.1-0.4 s for one full collection here; 0.01 ms after the freeze).
    gc.collect()
    gc.freeze()


def serve(fds: list[int], threads: int, heartbeat: int | None) -> None:
    """Serve Aurora's web on the listening sockets ``fds`` until SIGTERM or SIGINT."""
    import logging

    import uvicorn

    from .asgi import app

    # uvicorn's lines at INFO ("Started server process", "Waiting for application startup") are
    # noise beside Aurora's start-up block, as gunicorn's were (aurora/gunicorn_conf.py): warnings
    # and errors are still written; AURORA_LOG_LEVEL=debug brings back all.
    if os.environ.get("AURORA_LOG_LEVEL", "").lower() != "debug":
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)

    # Nothing this process may start later gets the ports or the heartbeat (as under gunicorn).
    sockets = [socket.socket(fileno=fd) for fd in fds]
    for sock in sockets:
        sock.set_inheritable(False)
    if heartbeat is not None:
        os.set_inheritable(heartbeat, False)
    config = uvicorn.Config(app, log_config=None, access_log=False, timeout_keep_alive=KEEP_ALIVE_SECONDS,
                            timeout_graceful_shutdown=GRACEFUL_SECONDS, **SERVER_SETTINGS)
    settle(app, threads)
    threading.Thread(target=_leave_when_orphaned, args=(os.getppid(),), name="aurora-orphan-watch",
                     daemon=True).start()

    async def main() -> None:
        beating = asyncio.create_task(_beat(heartbeat)) if heartbeat is not None else None
        try:
            await uvicorn.Server(config).serve(sockets=sockets)
        finally:
            if beating is not None:
                beating.cancel()

    asyncio.run(main())


async def _beat(heartbeat: int) -> None:
    """The event loop's sign of life, paced by the loop's own monotonic clock (a step of the
    wall clock neither stops nor hurries it)."""
    from ..stack import beat_on

    while True:
        beat_on(heartbeat)
        await asyncio.sleep(BEAT_SECONDS)


def _leave_when_orphaned(parent: int) -> None:
    """Exit hard once the supervisor has been gone for the graceful time and a little more. Its
    death sends this process SIGTERM (``PR_SET_PDEATHSIG``), on which uvicorn finishes its
    requests; but an event loop that is stuck never acts on it, and nobody is left to kill the
    process, which would hold the ports for ever (gunicorn's master killed such a worker)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    time.sleep(GRACEFUL_SECONDS + 5)
    os._exit(70)


def main() -> None:
    import click

    from .. import __version__

    @click.command()
    @click.option("--fd", "fds", multiple=True, type=int, required=True,
                  help="A listening socket inherited from the supervisor (repeat for several).")
    @click.option("--threads", default=8, show_default=True, help="Threads that run Flask.")
    @click.option("--heartbeat", type=int, default=None, help="A file descriptor to touch while the event loop runs.")
    @click.version_option(__version__, prog_name="aurora web")
    def command(fds: tuple[int, ...], threads: int, heartbeat: int | None) -> None:
        """Aurora's web on sockets ``aurora up`` holds (started by it, not by hand)."""
        serve(list(fds), threads, heartbeat)

    command()


if __name__ == "__main__":
    main()

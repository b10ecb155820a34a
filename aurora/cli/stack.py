"""Running Aurora: up, bootstrap, serve, worker, beat, db."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from .. import __version__
from ._common import _runtime, main
from ._output import emit

# -- running the stack -------------------------------------------------------------------------

@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", "ports", multiple=True, type=int, default=[9292, 9195], show_default=True,
              help="Port to listen on (repeat for several; the seed uses 9292 and 9195).")
@click.option("--web-workers", default=1, show_default=True, type=click.IntRange(min=1), help="Web processes (8 threads each), all on every port.")
@click.option("--web-timeout", default=30, show_default=True, type=click.IntRange(min=10), metavar="SECONDS",
              help="A web process whose event loop gives no sign of life for this long (stuck, or still "
                   "starting) is killed and started again (gunicorn's --timeout).")
@click.option("--logs", "log_dir", default=None, metavar="FOLDER",
              help="Where the processes' logs go, one file each (default $AURORA_HOME/logs); "
                   "'-' writes them to this terminal instead.")
def up(host: str, ports: tuple[int, ...], web_workers: int, web_timeout: int, log_dir: str | None) -> None:
    """Migrate the database and supervise web, worker and system worker (with beat).

    Once the stack answers it prints one block: the approval page and API URLs, the admin key on
    first start, where the docs and logs are. A process that exits is started again (with a
    growing pause; the stack stops after 5 exits of one process within 60 s, showing the end of
    its log). Ctrl-C or SIGTERM lets the runs in flight finish (at most AURORA_LEASE_SECONDS), a
    second Ctrl-C stops at once. Refuses to start when a port is taken or another `aurora up`
    runs on the same AURORA_HOME.
    """
    import subprocess
    from pathlib import Path

    from ..banner import StartUp, block, running_as_root
    from ..cli_config import config_path
    from ..config import load_settings
    from ..stack import Webs, claim_home, heartbeat_file, listen, log_files, run_stack
    from ..web.server import GRACEFUL_SECONDS

    # Everything the stack makes (database and WAL files, broker folder, keys, metrics, logs) is
    # for this user only: the database holds key hashes, peer tokens and form answers.
    os.umask(0o077)
    settings = load_settings()
    url = _url(host, ports[0])
    # Checked before anything is started or cleared: a second stack must not disturb the first.
    lock = claim_home(settings.home)
    sockets = listen(host, ports)  # held for the life of the stack: each web process inherits them
    from ._home import record_stack

    # The children are told exactly where this stack lives (they must never read the record of
    # another), and every later command, from any folder, finds it in the record.
    os.environ.update({"AURORA_HOME": str(settings.home), "AURORA_DATABASE_URL": settings.database_url,
                       "AURORA_POLICY_FILE": str(settings.policy_file), "AURORA_SECRETS_FILE": str(settings.secrets_file)})
    from ..metrics import prepare

    prepare(settings.home, clear=True, counting=False)  # counters start afresh with the stack; children share the folder
    # The database's check, migrations and the first key run in a child, so that this supervisor
    # stays small while it waits (it never imports SQLAlchemy: ~20 MB for as long as the stack runs).
    # (--debug too: an error there says "run it again with --debug", which must then show it)
    debug = ["--debug"] if click.get_current_context().find_root().params.get("debug") else []
    prepared = subprocess.run([*AURORA, *debug, "bootstrap", "--url", url], capture_output=True, text=True)
    if prepared.stderr:  # its log lines, or the one line that says why the database cannot be used
        click.echo(prepared.stderr.rstrip("\n"), err=True)
    if prepared.returncode:
        sys.exit(prepared.returncode)
    record_stack(settings)  # only a stack whose database could be used is recorded
    fds = tuple(sock.fileno() for sock in sockets)
    heartbeats = {name: heartbeat_file(settings.home) for name in web_names(web_workers)}
    commands = child_commands(fds, heartbeats)
    folder = None if log_dir == "-" else Path(log_dir).absolute() if log_dir else settings.home / "logs"
    logs = log_files(folder, list(commands)) if folder else None
    start_up = StartUp(
        version=__version__, node=settings.node_name, urls=[_url(host, p) for p in ports],
        key=prepared.stdout.strip() or None, cli_config=config_path(), logs=folder,
        log_names=[p.name for p in (logs or {}).values()], database=settings.database_url.split("@")[-1],
        broker=settings.broker_url.split("@")[-1], root=running_as_root())
    shown = []

    def announce() -> None:
        shown.append(True)
        click.echo(block(start_up))

    # A stopping web gets its graceful time and a little more: stuck, it would hold the stop for the lease.
    webs = Webs(sockets, heartbeats, hang=web_timeout, stop_grace=GRACEFUL_SECONDS + 5)
    code = run_stack(commands, grace=settings.lease_seconds, logs=logs, ready=lambda: _answers(host, ports[0]),
                     on_ready=announce, webs=webs)
    if start_up.key and not shown:  # the stack never answered: the key must not be lost all the same
        click.echo(f"Aurora's first admin key (saved in {config_path()}): {start_up.key}")
    lock.close()
    sys.exit(code)


def _url(host: str, port: int) -> str:
    """The stack's URL on ``host`` (an IPv6 address in brackets, RFC 3986)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _answers(host: str, port: int) -> bool:
    """Whether the web process answers ``/health/live`` (what the start-up block waits for).
    http.client, not urllib: never through an HTTP proxy, and less for the supervisor to load."""
    import http.client

    connection = http.client.HTTPConnection(host, port, timeout=1)
    try:
        connection.request("GET", "/health/live")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


#: how the stack starts Aurora: ``-P`` keeps the current directory off ``sys.path``, so an
#: ``aurora/`` folder where ``aurora up`` was started can never stand in for the installed package
AURORA = [sys.executable, "-P", "-m", "aurora"]


def web_names(count: int) -> list[str]:
    """The web processes' names (and log files): ``web``, then ``web-2``, ``web-3`` …"""
    return ["web", *(f"web-{n}" for n in range(2, count + 1))]


def child_commands(fds: tuple[int, ...], heartbeats: dict[str, int]) -> dict[str, list[str]]:
    """What the supervisor starts: a web process per heartbeat on the listening sockets ``fds``
    (aurora/web/server.py; no gunicorn master under the supervisor), the worker, the system worker."""
    web = [sys.executable, "-P", "-m", "aurora.web.server", *(f"--fd={fd}" for fd in fds), "--threads", "8"]
    return {
        **{name: [*web, f"--heartbeat={beat}"] for name, beat in heartbeats.items()},
        "worker": [*AURORA, "worker"],
        "system": [*AURORA, "worker", "--system", "--beat"],
    }


def _policy_on_record(runtime: Any) -> None:
    """Refuse to start without a good policy; record it if the chain's last policy record is not
    of it (the file was edited while the stack was stopped)."""
    from ..policy_ledger import record_start

    runtime.policies.current()
    record_start(runtime.db, runtime.policies)


@main.command()
@click.option("--url", default="http://127.0.0.1:9292", show_default=True, help="URL the CLI should use.")
def bootstrap(url: str) -> None:
    """Migrate the database; on first start make an admin key, save it for the CLI and print it."""
    from ..stack import prepare

    runtime = _runtime("migrates")
    runtime.policies.current()
    key = prepare(runtime.settings, url)
    if key:
        click.echo(key)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9292, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, help="gunicorn worker processes.")
def serve(host: str, port: int, workers: int) -> None:
    """Run only the web API (gunicorn) on one port."""
    import os

    from ..stack import gunicorn_command

    _policy_on_record(_runtime("serves"))
    command = gunicorn_command([f"{host}:{port}"], workers)
    os.execv(command[0], command)


#: what ``--loglevel`` takes (Python's names of its levels); each is handed on as Celery names it
LOG_LEVELS = click.Choice(["debug", "info", "warning", "warn", "error", "critical", "fatal"], case_sensitive=False)
_CELERY_LEVEL = {"warn": "warning", "fatal": "critical"}


def _celery_level(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    return _CELERY_LEVEL.get(value.lower(), value.lower())


def _default_loglevel() -> str:
    return os.environ.get("AURORA_LOG_LEVEL", "info").lower()


@main.command()
@click.option("--concurrency", "-c", type=click.IntRange(min=0), default=None,
              help="Worker processes (default AURORA_WORKER_CONCURRENCY); threads with --system (default 4).")
@click.option("--loglevel", "-l", default=_default_loglevel, show_default="AURORA_LOG_LEVEL, else info",
              type=LOG_LEVELS, callback=_celery_level, help="Lowest level of log lines written.")
@click.option("--system", is_flag=True,
              help="Serve the system queue instead of runs: sweeps, form ingests, federation syncs.")
@click.option("--beat", "with_beat", is_flag=True,
              help="With --system: run beat in this process too (what `aurora up` does); run one beat in all.")
def worker(concurrency: int | None, loglevel: str, system: bool, with_beat: bool) -> None:
    """Run a Celery worker that executes runs (or, with --system, the system's own work)."""
    import socket

    runtime = _runtime("serves")  # first: importing the Celery app builds a runtime of its own otherwise
    _policy_on_record(runtime)
    from .. import celery_app
    from ..celery_app import QUEUE, SYSTEM_QUEUE, celery, exit_when_stopped

    if system:
        # Threads: a sync that waits on a slow peer must not hold up a sweep beside it.
        from ..tasks import SYSTEM_THREADS

        queue, pool, count, kind = SYSTEM_QUEUE, "threads", concurrency or SYSTEM_THREADS, "system"
    else:
        queue, pool, count, kind = QUEUE, "prefork", concurrency or runtime.settings.worker_concurrency, "worker"
    if with_beat and not system:
        raise click.UsageError("--beat goes with --system: beat belongs beside the system queue")
    celery_app.process_kind, celery_app.embedded_beat = kind, with_beat
    exit_when_stopped()
    _root_warning_once()
    from ..worker_start import start_worker

    sys.exit(start_worker(celery, queue=queue, pool=pool, concurrency_=count, loglevel=loglevel,
                          name=f"aurora-{kind}-{socket.gethostname()}-{os.getpid()}@%h"))


def _root_warning_once() -> None:
    """Celery warns in eight lines that a worker runs as root; one line says it (the messages are
    JSON only, so root is a risk of the deployment, not of Celery's pickle)."""
    import warnings

    from celery.exceptions import SecurityWarning

    if hasattr(os, "geteuid") and os.geteuid() == 0:
        warnings.filterwarnings("ignore", category=SecurityWarning)
        click.echo("aurora worker: running as root; fine for a try-out, a server runs Aurora as its own user "
                   "(deploy/aurora.sysusers)", err=True)


@main.command()
@click.option("--loglevel", "-l", default=_default_loglevel, show_default="AURORA_LOG_LEVEL, else info",
              type=LOG_LEVELS, callback=_celery_level, help="Lowest level of log lines written.")
def beat(loglevel: str) -> None:
    """Run Celery beat: the sweeper that recovers stuck runs and expires overdue gates."""
    settings = _runtime("serves").settings  # first: importing the Celery app builds a runtime of its own otherwise
    from ..celery_app import celery

    settings.home.mkdir(parents=True, exist_ok=True)
    celery.start(["beat", "-l", loglevel, "-s", str(settings.home / "celerybeat-schedule")])


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply the Alembic migrations (aurora up does this too)."""
    from ..federation import vault
    from ..migrations import current, upgrade

    runtime = _runtime("migrates")
    url = runtime.settings.database_url
    upgrade(url, revision)
    if revision == "head":  # the web unit's first step: an edit made while stopped goes on record
        from ..policy_ledger import record_start

        record_start(runtime.db, runtime.policies)
    now = current(url)
    sealed = vault.seal_plaintext(runtime.db, runtime.settings.federation_secret_path)
    runtime.identity  # noqa: B018 - the node's federation key pair, made on first start

    def human() -> None:
        click.echo(f"database at revision {now}")
        if sealed:
            click.echo(f"encrypted {sealed} peer token(s) stored in plain text with {runtime.settings.federation_secret_path}")

    emit({"revision": now, "sealed_peer_tokens": sealed}, human)

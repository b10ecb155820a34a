"""The Celery application: broker settings, the beat schedule, and process heartbeats.

Messages carry only a run id; the database holds the truth. ``acks_late`` with
``reject_on_worker_lost`` lets a broker that supports it redeliver a killed worker's message;
the run's lease and the beat sweeper recover it on every broker, including the embedded
filesystem transport, which cannot redeliver.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from typing import Any

from celery import Celery, signals
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from .config import Settings
from .db import dispose_all
from .models import ProcessHeartbeat, utcnow
from .runtime import get_runtime

log = logging.getLogger(__name__)

#: seconds between two heartbeats of a worker or beat process
HEARTBEAT_INTERVAL = 10.0
#: the queue every run goes through
QUEUE = "aurora"
#: the queue of the system's own work (sweeps, form ingests, federation syncs), served by
#: ``aurora worker --system`` so that a backlog of runs never delays recovery, and a slow peer
#: never delays a run
SYSTEM_QUEUE = "aurora.system"
#: the tasks that go through :data:`SYSTEM_QUEUE`
SYSTEM_TASKS = ("aurora.sweep", "aurora.ingest_forms", "aurora.federation_sync", "aurora.audit_checkpoint",
                "aurora.fire_schedules", "aurora.end_frozen_holders")
#: seconds between two looks for frozen holders of the outbox locks (PostgreSQL only:
#: aurora/frozen_holders.py) — apart from the sweep, whose own writes may be waiting for them
FROZEN_HOLDERS_EVERY = 2.0


def broker_options(settings: Settings) -> dict[str, Any]:
    if settings.embedded_broker:
        folder = settings.broker_folder
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            # consumers are woken by a datagram when a message is put (aurora/filesystem_transport.py):
            # the interval is only the safety net for a lost one, and what an idle worker polls at
            "wake_folder": str(folder / "wake"),
            "polling_interval": 0.1,
        }
    if settings.broker_url.startswith(("redis://", "rediss://")):
        # No ack emulation: kombu's copy of every message taken (an unacked hash and a sorted set,
        # written when a worker takes the message and cleared when it acknowledges it, each a
        # blocking round trip on the worker's consumer loop) was about 60% of that loop's work per
        # run, and it only ever gave a message back after its visibility timeout (an hour). Aurora
        # recovers without it, sooner: a run claimed by a worker that died has its lease lapse and
        # is reclaimed by the sweeper; a message taken by a worker that died before the claim is
        # sent again by the sweeper (its run is queued, older than what the broker holds, and past
        # ``requeue_after``: aurora.sweeper); a child that dies alone has its message put back by
        # the worker (``reject_on_worker_lost``), and a warm shutdown puts back what was prefetched.
        return {"ack_emulation": False}
    return {}


def _policy_number(pick: Any, default: float) -> float:
    """A schedule interval from the policy in force when beat starts."""
    try:
        return float(pick(get_runtime().policies.current()))
    except Exception:  # noqa: BLE001 - the worker reports a broken policy itself
        return default


def _ingest_interval() -> float:
    return _policy_number(lambda p: p.adapter("typeform").get("ingest_interval_seconds", 600), 600.0)


def _schedule(entries: dict[str, tuple[str, float]]) -> dict[str, dict[str, Any]]:
    # A firing not taken within its interval is dropped: when the system worker was down, the
    # next firing does the same work, and a pile of stale sweeps would only delay it.
    return {name: {"task": task, "schedule": every, "options": {"expires": max(every, 1.0)}}
            for name, (task, every) in entries.items()}


def make_celery(settings: Settings, set_as_current: bool = True) -> Celery:
    app = Celery("aurora", broker=settings.broker_url, set_as_current=set_as_current)
    if settings.broker_url.startswith("redis://"):
        # Not rediss://: kombu turns TLS on from the URL's scheme name, which a transport given
        # by class would hide.
        from . import redis_transport

        app.conf.broker_transport = redis_transport.NAME
    elif settings.embedded_broker:
        from . import filesystem_transport

        app.conf.broker_transport = filesystem_transport.NAME
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=QUEUE,
        broker_connection_retry_on_startup=True,
        broker_transport_options=broker_options(settings),
        worker_hijack_root_logger=False,
        worker_enable_remote_control=not settings.embedded_broker,
        worker_send_task_events=False,
        # The worker's timer thread sleeps up to this long between checks, and a stopping worker
        # waits for it: Celery's default of 1 s was a second of every shutdown.
        worker_timer_precision=0.1,
        task_routes={name: {"queue": SYSTEM_QUEUE} for name in SYSTEM_TASKS},
        beat_schedule=_schedule({
            "aurora-sweep": ("aurora.sweep", settings.sweep_interval),
            "aurora-ingest-forms": ("aurora.ingest_forms", _ingest_interval()),
            "aurora-federation-sync": ("aurora.federation_sync", _policy_number(
                lambda p: p.federation["sync_interval"], 600.0)),
            "aurora-audit-checkpoint": ("aurora.audit_checkpoint", float(settings.audit_checkpoint_interval)),
            "aurora-fire-schedules": ("aurora.fire_schedules", 20.0),  # aurora.triggers.TICK
            **({"aurora-end-frozen-holders": ("aurora.end_frozen_holders", FROZEN_HOLDERS_EVERY)}
               if settings.database_url.startswith("postgresql") else {}),
        }),
        beat_schedule_filename=str(settings.home / "celerybeat-schedule"),
    )
    return app


celery = make_celery(get_runtime().settings)
celery.autodiscover_tasks(["aurora"], related_name="tasks", force=True)


def record_heartbeat(kind: str, name: str) -> None:
    """Say in the database that ``name`` (of ``kind``) is alive now; never raises."""
    _beat(kind, name)


def _beat(kind: str, name: str) -> None:
    db = get_runtime().db
    try:
        with db.write() as session:
            moved = session.execute(
                update(ProcessHeartbeat).where(ProcessHeartbeat.name == name).values(last_seen=utcnow(), kind=kind)
            ).rowcount
            if not moved:
                session.add(ProcessHeartbeat(name=name, kind=kind, last_seen=utcnow()))
    except IntegrityError:
        pass
    except Exception:  # noqa: BLE001 - a missed heartbeat must never stop the process
        log.warning("heartbeat of %s failed", name, exc_info=True)


#: what this process's heartbeat says it is: ``worker``, ``system`` (``aurora worker --system``) or ``beat``
process_kind = "worker"


def _start_heartbeat(kind: str) -> None:
    name = f"{kind}@{socket.gethostname()}:{os.getpid()}"

    def loop() -> None:
        while True:
            _beat(kind, name)
            threading.Event().wait(HEARTBEAT_INTERVAL)

    threading.Thread(target=loop, name=f"{kind}-heartbeat", daemon=True).start()


@signals.setup_logging.connect
def _on_setup_logging(loglevel: int | str | None = None, **_: Any) -> None:
    # Connected, so Celery leaves logging to Aurora: the same redaction and format everywhere.
    # The level is the one given with ``-l`` (Celery passes it here, not to the root logger).
    from .logs import configure

    configure(get_runtime().secret_values, logging.getLevelName(loglevel) if isinstance(loglevel, int) else loglevel)


#: set by ``aurora worker --system --beat``: this process runs beat too, in a thread
embedded_beat = False
_beat_thread: Any = None


@signals.worker_ready.connect
def _on_worker_ready(**_: Any) -> None:
    global _beat_thread
    _start_heartbeat(process_kind)
    if embedded_beat:
        # Celery's own ``-B`` would fork a process for it; a thread saves that process's memory
        # (about 70 MB of the embedded stack) and stops with the worker.
        from celery.beat import EmbeddedService

        settings = get_runtime().settings
        _beat_thread = EmbeddedService(celery, thread=True,
                                       schedule_filename=str(settings.home / "celerybeat-schedule"))
        _beat_thread.start()


@signals.worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    if _beat_thread is not None:
        _beat_thread.stop()


@signals.beat_init.connect
def _on_beat_init(sender: Any = None, **_: Any) -> None:
    _start_heartbeat("beat")
    # Beat's first firing of an interval comes one interval after it starts: sweep now, so that
    # what a crash left behind is recovered at once and a fresh stack is healthy in seconds.
    try:
        (getattr(sender, "app", None) or celery).send_task("aurora.sweep", expires=max(get_runtime().settings.sweep_interval, 1.0))
    except Exception:  # noqa: BLE001 - the scheduled sweeps follow; the worker reports a broken broker
        log.warning("could not send the first sweep", exc_info=True)


def exit_when_stopped() -> None:
    """Make this worker process leave as soon as Celery's warm shutdown is complete.

    ``worker_shutdown`` is sent once the consumer is closed and the pool has finished every task
    it held (runs done, messages acknowledged). What Celery and billiard still do after it is only
    joining their own threads, each parked in a sleep of up to a second (billiard's timeout
    handler, its pool finalizer): about a second of an idle stop spent waiting for nothing. Only
    the ``aurora worker`` command calls this; a worker embedded in another program keeps Celery's
    own exit.
    """

    @signals.worker_shutdown.connect(weak=False)
    def _leave(sender: Any = None, **_: Any) -> None:
        code = getattr(sender, "exitcode", 0) or 0
        logging.shutdown()  # flush every handler; nothing after this line may log
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code if isinstance(code, int) else 1)


@signals.worker_process_init.connect
def _on_child_start(**_: Any) -> None:
    # Connections opened by the parent must not be shared with forked children.
    dispose_all()

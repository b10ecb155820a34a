"""``GET /health``, ``/health/live`` and ``/health/ready`` (no authentication): is each part of the
stack working? Errors name a component and an exception class or errno, never a path, URL or secret."""

from __future__ import annotations

import errno
import os
import shutil
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import delete, func, insert, select

from .. import __version__
from ..errors import PolicyError, SecretsError
from ..models import Event, ProcessHeartbeat, Run, RunStatus, utcnow
from .unavailable import component_of

bp = Blueprint("health", __name__)

#: a worker or beat process not heard from for this long counts as gone
STALE_AFTER = timedelta(seconds=45)
#: what a readiness probe that failed should wait before asking again (seconds)
READY_RETRY_AFTER = 5
#: the components without which a request fails: /health is 503 when one of them is
ESSENTIAL = ("database", "broker", "disk")
#: what /health/ready checks: the essentials, and someone to run what is submitted
READY = (*ESSENTIAL, "workers")
#: bytes written by the broker folder's write test: about one message
PROBE_BYTES = 1024


def _database(runtime: Any) -> tuple[dict[str, Any], int | None, list[ProcessHeartbeat]]:
    """Read what /health shows, then prove the database takes a write: a row inserted and deleted
    in one transaction (nobody else ever sees it, but the commit is written like any other)."""
    kind = runtime.db.dialect
    try:
        with runtime.db.read() as session:
            last_seq = session.scalar(select(func.max(Event.seq))) or 0
            beats = list(session.scalars(select(ProcessHeartbeat)))
    except Exception as exc:  # noqa: BLE001 - any failure means "database down"; the class name only
        return {"ok": False, "kind": kind, "error": exc.__class__.__name__}, None, []
    probe = f"probe:{uuid.uuid4().hex}"
    try:
        with runtime.db.write() as session:
            session.execute(insert(ProcessHeartbeat).values(name=probe, kind="probe", last_seen=utcnow()))
            session.execute(delete(ProcessHeartbeat).where(ProcessHeartbeat.name == probe))
    except Exception as exc:  # noqa: BLE001
        cause = component_of(exc)
        why = "the disk is full" if cause == "disk" else exc.__class__.__name__
        return {"ok": False, "kind": kind, "writable": False, "error": f"not writable: {why}"}, last_seq, beats
    return {"ok": True, "kind": kind, "writable": True}, last_seq, beats


def _disk(runtime: Any) -> dict[str, Any]:
    """Free space where Aurora writes: AURORA_HOME (broker folder, beat schedule) and a SQLite
    database, when it lies on another disk. The paths stay out of the answer."""
    settings = runtime.settings
    places = {"home": settings.home}
    database = runtime.db.engine.url.database if runtime.db.dialect == "sqlite" else None
    if database and database != ":memory:":
        places["database"] = Path(database).parent
    minimum = settings.min_free_disk_mb * 1024 * 1024
    result: dict[str, Any] = {"ok": True, "min_free_mb": settings.min_free_disk_mb}
    seen: set[int] = set()
    for name, folder in places.items():
        try:
            folder = _existing(folder)
            device = folder.stat().st_dev
            if device in seen:
                continue
            seen.add(device)
            usage = shutil.disk_usage(folder)
        except OSError as exc:
            return {**result, "ok": False, "error": f"{name}: cannot be read ({errno.errorcode.get(exc.errno or 0, 'error')})"}
        result[f"{name}_free_mb"] = round(usage.free / 1024 / 1024, 1)
        if usage.free < minimum:
            result["ok"] = False
            result["error"] = f"{name}: {result[f'{name}_free_mb']} MB free, less than {settings.min_free_disk_mb} MB"
    return result


def _existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _broker(runtime: Any) -> dict[str, Any]:
    settings = runtime.settings
    if settings.embedded_broker:
        return _broker_folder(settings.broker_folder / "queue")
    from kombu import Connection

    started = time.perf_counter()
    try:
        with Connection(settings.broker_url, connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
        return {"ok": True, "kind": settings.broker_url.split(":", 1)[0],
                "latency_ms": round((time.perf_counter() - started) * 1000, 1)}
    except Exception as exc:  # noqa: BLE001 - any failure means "broker unreachable"
        return {"ok": False, "kind": settings.broker_url.split(":", 1)[0], "error": exc.__class__.__name__}


def _broker_folder(folder: Path) -> dict[str, Any]:
    """A real write where the embedded broker writes: create, fill, fsync and delete a file the size
    of a message, in the queue folder itself (a read-only queue folder must not pass). Its name
    starts with a dot, which no reader takes for a message (``filesystem_transport``)."""
    probe = folder / f".health-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"\0" * PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, "error")
        why = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else name
        return {"ok": False, "kind": "filesystem", "error": f"the broker folder is not writable: {why}"}
    return {"ok": True, "kind": "filesystem"}


def _processes(beats: list[ProcessHeartbeat], now: Any, sweep_interval: float) -> dict[str, dict[str, Any]]:
    components: dict[str, dict[str, Any]] = {}
    # A system worker whose threads are all stuck still beats its heartbeat: "sweeps" says when
    # a sweep last finished, which is what recovery needs.
    sweeps_stale = max(STALE_AFTER, timedelta(seconds=3 * sweep_interval))
    # The system worker (`aurora worker --system`) runs the sweeps: without it nothing recovers.
    for kind, name, label in (("worker", "workers", "worker"), ("system", "system_workers", "system worker"),
                              ("beat", "beats", "beat"), ("sweep", "sweeps", "finished sweep")):
        stale = sweeps_stale if kind == "sweep" else STALE_AFTER
        alive = [b for b in beats if b.kind == kind and now - b.last_seen < stale]
        components[name] = {"ok": bool(alive), "seen": len(alive)}
        if not alive:
            components[name]["error"] = f"no {label} seen in the last {int(stale.total_seconds())} s"
    return components


def _essentials(runtime: Any) -> tuple[dict[str, dict[str, Any]], int | None]:
    database, last_seq, beats = _database(runtime)
    components = {"database": database, "broker": _broker(runtime), "disk": _disk(runtime),
                  **_processes(beats, utcnow(), runtime.settings.sweep_interval)}
    return components, last_seq


def _federation(runtime: Any, policy: Any) -> dict[str, Any]:
    fed = policy.federation
    if not fed["enabled"]:
        return {"ok": True, "enabled": False}
    from ..federation import registry

    try:
        peers = registry.listing(runtime.db, float(fed["sync_interval"]))
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "enabled": True, "error": exc.__class__.__name__}
    down = [p["name"] for p in peers if p["state"] == "down" and p["name"] in fed["nodes"]]
    result: dict[str, Any] = {"ok": not down, "enabled": True, "peers": {p["name"]: p["state"] for p in peers}}
    if down:
        result["error"] = f"peers down: {', '.join(down)}"
    from ..federation import witness

    witnessed = witness.problems(runtime.db)  # a peer's audit log cut short or rewritten
    if witnessed:
        result["ok"] = False
        result["witness_problems"] = witnessed
        result["error"] = "; ".join(filter(None, [result.get("error"),
                                                  f"audit log of {', '.join(sorted(witnessed))} no longer holds its checkpoint"]))
    overdue = witness.stale(runtime.db)  # checkpoints held back on the way, or no longer published
    if overdue:
        result["ok"] = False
        result["witness_stale"] = overdue
        result["error"] = "; ".join(filter(None, [result.get("error"),
                                                  f"no fresh audit checkpoint of {', '.join(sorted(overdue))}"]))
    return result


def adapter_modes(runtime: Any, policy: Any) -> dict[str, str]:
    """Each adapter's effective mode for a new run: simulated, canary N%, live or rolled back."""
    from .. import adapter_state
    from ..adapters import BY_NAME
    from ..adapters.base import CallContext
    from ..adapters.selftest import SAMPLES, canary_probe_id
    from ..errors import SecretsError

    try:
        secrets = runtime.secrets()
    except SecretsError:
        return {name: "simulated" for name in BY_NAME}  # no secrets, nothing can go live
    try:
        rollouts = adapter_state.load(runtime.db)
    except Exception:  # noqa: BLE001 - the database component reports the outage itself
        rollouts = {}  # rollouts unknown: say what the policy and the secrets allow
    ctx = CallContext(run_id=canary_probe_id(), policy=policy, secrets=secrets, rollouts=rollouts)
    modes = {}
    for name, adapter in BY_NAME.items():
        rollout = rollouts.get(name)
        if rollout is not None and rollout.rolled_back:
            modes[name] = "rolled back"
        elif not adapter.decide(SAMPLES[name], ctx).live:  # the probe id is inside any canary share
            modes[name] = "simulated"
        elif (rollout is not None and rollout.promoted) or policy.canary_percent >= 100:
            modes[name] = "live"
        else:
            modes[name] = f"canary {policy.canary_percent}%"
    return modes


def _secrets(runtime: Any) -> dict[str, Any]:
    """Can a worker use the secrets file? (Its path is not shown: /health asks for no key.)"""
    from ..blocking import secrets_for

    try:
        policy = runtime.policies.current()
    except PolicyError:
        policy = None
    try:
        secrets_for(policy, runtime.secrets)  # a missing file blocks runs the policy means live
    except SecretsError as exc:
        message = str(exc).replace(str(runtime.settings.secrets_file), "the secrets file")
        result: dict[str, Any] = {"ok": False, "error": message}
        try:
            with runtime.db.read() as session:
                result["blocked_runs"] = session.scalar(select(func.count()).select_from(Run).where(
                    Run.status == RunStatus.QUEUED.value, Run.error.is_not(None)))
        except Exception:  # noqa: BLE001 - the database has its own component
            result["blocked_runs"] = None
        return result
    return {"ok": True}


@bp.get("/health")
def health() -> tuple[Response, int] | tuple[Response, int, dict[str, str]]:
    """Everything, per component. 503 ("down") when the database, the broker or the disk fails,
    so no request can succeed; 200 with "degraded" when only workers, beat, the policy, the
    secrets file or a peer is missing or unusable; 200 "ok" otherwise. A load balancer wants ``/health/ready`` instead."""
    runtime = current_app.extensions["aurora"]
    components, last_seq = _essentials(runtime)
    try:
        policy = runtime.policies.current()
    except PolicyError:  # no good policy at all: runs are blocked (aurora.blocking), the API still answers
        # Never the error itself: it quotes the policy's values, and nobody here is signed in.
        components["policy"] = {"ok": False, "error": "no usable policy: see `aurora doctor`"}
    else:
        components["federation"] = _federation(runtime, policy)
        modes = adapter_modes(runtime, policy)
        # dry_run is the truth about what may happen: false as soon as any adapter may call live
        # (a per-adapter override can make mailgun live under a global dry_run: true)
        components["policy"] = {"ok": runtime.policies.last_error is None, "version": policy.version,
                                "dry_run": all(mode in ("simulated", "rolled back") for mode in modes.values()),
                                "adapters": modes}
        if runtime.policies.last_error:
            # fail closed: the last good policy answers requests, but no run acts on it
            components["policy"]["error"] = "policy invalid (an edit was refused): runs are blocked until it " \
                                            "is fixed; see `aurora doctor`"
            components["policy"]["runs_blocked"] = True
    components["secrets"] = _secrets(runtime)
    # A refused policy edit leaves the last good policy in force, and an unusable secrets file
    # blocks runs but no request: degraded, not down.
    healthy = all(components[name]["ok"] for name in ESSENTIAL)
    status = "ok" if healthy and all(c["ok"] for c in components.values()) else ("degraded" if healthy else "down")
    body = {
        "status": status,
        "node": runtime.settings.node_name,
        "version": __version__,
        "last_event_seq": last_seq,
        "server_time": utcnow().isoformat(),
        "components": components,
    }
    if not healthy:
        return jsonify(body), 503, {"Retry-After": str(READY_RETRY_AFTER)}
    return jsonify(body), 200


@bp.get("/health/live")
def live() -> Response:
    """Liveness: the process answers. It touches nothing else, so a database outage never makes an
    orchestrator restart healthy web processes (that is what readiness is for)."""
    runtime = current_app.extensions["aurora"]
    return jsonify({"status": "ok", "node": runtime.settings.node_name, "version": __version__})


@bp.get("/health/ready")
def ready() -> tuple[Response, int, dict[str, str]]:
    """Readiness: 200 only when a submission would be stored and run now — the database takes a
    write, the broker takes a message, the disk has room and a worker was heard from recently."""
    runtime = current_app.extensions["aurora"]
    components, _ = _essentials(runtime)
    checked = {name: components[name] for name in READY}
    failing = [name for name, component in checked.items() if not component["ok"]]
    if failing:
        body = {"status": "not_ready", "failing": failing, "components": checked}
        return jsonify(body), 503, {"Retry-After": str(READY_RETRY_AFTER)}
    return jsonify({"status": "ready", "components": checked}), 200, {}


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text format; any API key (Prometheus sends it as a bearer token)."""
    from .. import keys
    from ..metrics import render
    from .auth import presented_key

    runtime = current_app.extensions["aurora"]
    keys.authenticate(runtime.db, presented_key())
    body, content_type = render(runtime)
    return Response(body, content_type=content_type)

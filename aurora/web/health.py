"""``GET /health`` (no authentication): is each part of the stack working?"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import func, select

from .. import __version__
from ..models import Event, ProcessHeartbeat, utcnow

bp = Blueprint("health", __name__)

#: a worker or beat process not heard from for this long counts as gone
STALE_AFTER = timedelta(seconds=45)


def _broker(runtime: Any) -> dict[str, Any]:
    settings = runtime.settings
    if settings.embedded_broker:
        folder = settings.broker_folder / "queue"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            ok = os.access(folder, os.W_OK)
        except OSError:
            ok = False
        return {"ok": ok, "kind": "filesystem", **({} if ok else {"error": "the queue folder is not writable"})}
    from kombu import Connection

    started = time.perf_counter()
    try:
        with Connection(settings.broker_url, connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
        return {"ok": True, "kind": settings.broker_url.split(":", 1)[0],
                "latency_ms": round((time.perf_counter() - started) * 1000, 1)}
    except Exception as exc:  # noqa: BLE001 - any failure means "broker unreachable"
        return {"ok": False, "kind": settings.broker_url.split(":", 1)[0], "error": exc.__class__.__name__}


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
    return result


@bp.get("/health")
def health() -> tuple[Response, int]:
    runtime = current_app.extensions["aurora"]
    components: dict[str, dict[str, Any]] = {}
    last_seq = None
    try:
        with runtime.db.read() as session:
            last_seq = session.scalar(select(func.max(Event.seq))) or 0
            beats = list(session.scalars(select(ProcessHeartbeat)))
        components["database"] = {"ok": True, "kind": runtime.db.dialect}
    except Exception as exc:  # noqa: BLE001
        components["database"] = {"ok": False, "kind": runtime.db.dialect, "error": exc.__class__.__name__}
        beats = []
    components["broker"] = _broker(runtime)
    now = utcnow()
    for kind in ("worker", "beat"):
        alive = [b for b in beats if b.kind == kind and now - b.last_seen < STALE_AFTER]
        components[f"{kind}s"] = {"ok": bool(alive), "seen": len(alive)}
        if not alive:
            components[f"{kind}s"]["error"] = f"no {kind} seen in the last {int(STALE_AFTER.total_seconds())} s"
    policy = runtime.policies.current()
    components["federation"] = _federation(runtime, policy)
    components["policy"] = {"ok": runtime.policies.last_error is None, "version": policy.version,
                            "dry_run": policy.dry_run}
    if runtime.policies.last_error:
        components["policy"]["error"] = runtime.policies.last_error
    # A refused policy edit leaves the last good policy in force: degraded, not down.
    essential = ("database", "broker")
    healthy = all(components[name]["ok"] for name in essential)
    status = "ok" if healthy and all(c["ok"] for c in components.values()) else ("degraded" if healthy else "down")
    body = {
        "status": status,
        "node": runtime.settings.node_name,
        "version": __version__,
        "last_event_seq": last_seq,
        "server_time": now.isoformat(),
        "components": components,
    }
    return jsonify(body), 200 if healthy else 503


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

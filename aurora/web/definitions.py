"""Stored definitions (``/definitions``) and their webhook triggers (``POST /hooks/<name>``).

Admins apply, disable, enable and rotate a webhook secret; submitters start runs; every role
may look. A hook is proven by its Standard Webhooks signature, not by an API key."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from .. import definitions, documents, flow_runs, triggers, webhooks
from .. import runs as run_views
from ..errors import DocumentSyntaxError, Problem
from ..models import Role
from ..queue import enqueue
from .auth import ANY_ROLE, require
from .params import int_arg

bp = Blueprint("definitions", __name__)


def _runtime() -> Any:
    return current_app.extensions["aurora"]


def _send(run: Any) -> dict[str, Any]:
    engine = _runtime().engine
    ready = flow_runs.ready_steps(engine, run.id) if run.goal == documents.flows.FLOW_GOAL else [run.id]
    payload = {**run_views.summary(run), "links": {"self": f"/workflows/{run.id}"}}
    if not all([enqueue(run_id) for run_id in ready]):
        payload["warning"] = "stored, but the queue is unreachable; it will be sent again automatically"
    return payload


@bp.put("/definitions/<name>")
@require(Role.ADMIN)
def apply(name: str) -> tuple[Response, int]:
    runtime = _runtime()
    fmt = "json" if (request.mimetype or "").endswith("json") else "yaml"
    applied = definitions.apply(runtime.db, request.get_data(cache=False), g.caller.name, fmt,
                                runtime.settings.max_document_bytes, name=name)
    body = {"name": applied.name, "version": applied.version, "digest": applied.digest, "changed": applied.changed}
    return jsonify(body), 201 if applied.changed and applied.version == 1 else 200


@bp.get("/definitions")
@require(*ANY_ROLE)
def listing() -> Response:
    return jsonify({"definitions": definitions.listing(_runtime().db)})


@bp.get("/definitions/<name>")
@require(*ANY_ROLE)
def show(name: str) -> Response:
    version = int_arg("version", 0, 0, 2**31) or None
    return jsonify(definitions.show(_runtime().db, name, version))


@bp.get("/definitions/<name>/history")
@require(*ANY_ROLE)
def history(name: str) -> Response:
    return jsonify({"name": name, "versions": definitions.history(_runtime().db, name)})


@bp.post("/definitions/<name>/<switch>")
@require(Role.ADMIN)
def enable(name: str, switch: str) -> Any:
    if switch == "secret":
        secret = triggers.rotate_secret(_runtime().engine, name, g.caller.name)
        return jsonify({"name": name, "secret": secret,
                        "note": f"shown once; sign POST /hooks/{name} with it (Standard Webhooks)"})
    if switch not in ("enable", "disable"):
        return jsonify({"error": "not_found", "message": f"unknown action {switch[:32]!r}"}), 404
    return jsonify(definitions.set_enabled(_runtime().db, name, switch == "enable", g.caller.name))


@bp.post("/definitions/<name>/runs")
@require(Role.SUBMITTER)
def start(name: str) -> tuple[Response, int]:
    body = documents.parse(request.get_data(cache=False) or b"{}", fmt="json", max_bytes=64 * 1024)
    if not isinstance(body, dict):
        raise DocumentSyntaxError([Problem("", "send {\"inputs\": {...}}")])
    inputs = body.get("inputs")
    if inputs is not None and not isinstance(inputs, dict):
        raise DocumentSyntaxError([Problem("inputs", "must be an object of input names to values")])
    run, _ = definitions.start(_runtime().engine, name, inputs, g.caller.name, g.caller.person,
                               trigger={"by": "person", "who": g.caller.person,
                                        "text": f"started by {g.caller.person}"})
    return jsonify(_send(run)), 201


@bp.post("/hooks/<name>")
def hook(name: str) -> Any:
    body = request.get_data(cache=False)
    try:
        run, _ = triggers.receive(_runtime().engine, name, body, dict(request.headers))
    except (triggers.HookRefused, triggers.HookNotFound) as exc:
        # one label per kind of refusal: a caller choosing names must not grow the metrics
        webhooks.record_rejection(_runtime().db, "hooks", exc.code, {}, len(body))
        return jsonify({"error": exc.code, "message": str(exc)}), exc.http_status
    return jsonify(_send(run)), 201

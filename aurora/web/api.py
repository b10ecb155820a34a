"""The workflows API: submit, look at, list and cancel runs; read the event log."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from .. import documents, events, flow_runs, idempotency
from .. import runs as run_views
from ..errors import AuroraError, DocumentSyntaxError, PermissionDenied, Problem
from ..models import Role, RunStatus
from ..queue import enqueue
from .auth import ANY_ROLE, require
from .params import BadParameter, int_arg

bp = Blueprint("api", __name__)

_YAML_TYPES = {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain"}
_JSON_TYPES = {"application/json"}


class UnsupportedMediaType(AuroraError):
    """Raised when a workflow is sent in a format Aurora does not read."""

    code = "unsupported_media_type"
    http_status = 415


def _runtime() -> Any:
    return current_app.extensions["aurora"]


def _body() -> tuple[bytes, str, dict[str, Any] | None]:
    """The workflow bytes, their format (yaml or json) and the inputs given beside the document
    (a workflow of several steps), from any accepted content type."""
    mimetype = request.mimetype or ""
    if mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise DocumentSyntaxError([Problem("file", "multipart body needs a file field named 'file'")])
        filename = (upload.filename or "").lower()
        inputs = request.form.get("inputs")
        return (upload.read(), "json" if filename.endswith(".json") or upload.mimetype in _JSON_TYPES else "yaml",
                _inputs(documents.parse(inputs, fmt="json")) if inputs else None)
    if mimetype in _JSON_TYPES or mimetype.endswith("+json"):
        return _envelope(request.get_data(cache=False))
    if mimetype in _YAML_TYPES or mimetype.endswith("+yaml"):
        return request.get_data(cache=False), "yaml", None
    accepted = "application/yaml, text/yaml, application/json or multipart/form-data with a 'file'"
    raise UnsupportedMediaType(f"Content-Type {mimetype or '(none)'!r} is not accepted; send {accepted}")


def _run_id(given: str) -> str:
    """A run's full id from the id or a unique prefix of it (400 too short, 404, 409 ambiguous)."""
    with _runtime().db.read() as session:
        return run_views.resolve_id(session, given)


def _envelope(body: bytes) -> tuple[bytes, str, dict[str, Any] | None]:
    """A JSON body is the document itself, or ``{"document": <object, or YAML or JSON text>, "inputs": {...}}``
    (a workflow document never has a ``document`` key)."""
    max_bytes = _runtime().settings.max_document_bytes
    value = documents.parse(body, fmt="json", max_bytes=max_bytes + 64 * 1024)
    if not (isinstance(value, dict) and "document" in value):
        return body, "json", None
    extra = sorted(set(value) - {"document", "inputs"})
    if extra:
        raise DocumentSyntaxError([Problem(extra[0], "unknown key beside the document; allowed: document, inputs")])
    document = value["document"]
    if isinstance(document, str):
        # the text of a YAML or a JSON file (``aurora submit flow.json --input …``): PyYAML reads
        # YAML 1.1, which is not quite a superset of JSON (``\ud83d\ude00`` escapes, ``1e3``)
        try:
            json.loads(document)
            fmt = "json"
        except ValueError:
            fmt = "yaml"
        return document.encode("utf-8"), fmt, _inputs(value.get("inputs"))
    if not isinstance(document, dict):
        raise DocumentSyntaxError([Problem("document", "must be the workflow (an object) or its YAML text")])
    return json.dumps(document).encode("utf-8"), "json", _inputs(value.get("inputs"))


def _inputs(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise DocumentSyntaxError([Problem("inputs", "must be an object of input names to values")])
    return value


@bp.post("/workflows")
@require(Role.SUBMITTER)
def submit() -> tuple[Response, int, dict[str, str]]:
    runtime = _runtime()
    key = idempotency.parse(request.headers.get("Idempotency-Key"))
    body, fmt, inputs = _body()
    workflow = documents.load(body, fmt=fmt, max_bytes=runtime.settings.max_document_bytes, inputs=inputs)
    run, new = runtime.engine.submit_once(workflow, g.caller.name, key, g.caller.person)
    payload = {**run_views.summary(run), "document_hash": run.document_hash, "links": {"self": f"/workflows/{run.id}"}}
    headers = {"Location": f"/workflows/{run.id}"}
    if not new:
        # A retry: the first request sent it (or the sweeper will); sending it again gains nothing.
        return jsonify(payload), 200, {**headers, "Idempotent-Replayed": "true"}
    # a workflow of several steps: its first steps, created with it (the sweeper sends lost ones)
    ready = flow_runs.ready_steps(runtime.engine, run.id) if run.goal == documents.flows.FLOW_GOAL else [run.id]
    if not all([enqueue(run_id) for run_id in ready]):
        payload["warning"] = "stored, but the queue is unreachable; it will be sent again automatically"
    return jsonify(payload), 201, headers


@bp.get("/workflows")
@require(*ANY_ROLE)
def listing() -> Response:
    status = request.args.get("status")
    if status is not None and status not in {s.value for s in RunStatus}:
        raise BadParameter(f"status: {status[:40]!r} is not one of {', '.join(s.value for s in RunStatus)}")
    goal = request.args.get("goal")
    goals = documents.GOALS | {documents.flows.FLOW_GOAL}
    if goal is not None and goal not in goals:
        raise BadParameter(f"goal: {goal[:40]!r} is not one of {', '.join(sorted(goals))}")
    limit = int_arg("limit", 50, 1, run_views.MAX_PAGE)
    with _runtime().db.read() as session:
        return jsonify(run_views.listing(session, status=status, goal=goal, name=request.args.get("name"),
                                         limit=limit, cursor=request.args.get("cursor")))


@bp.get("/workflows/<run_id>")
@require(*ANY_ROLE)
def show(run_id: str) -> Response:
    from .. import ledger

    run_id = _run_id(run_id)
    ledger.refresh(_runtime().engine, [run_id])  # a waiting run shows what it would send now
    with _runtime().db.read() as session:
        return jsonify(run_views.detail(session, run_id, _runtime().settings.node_name))


@bp.get("/workflows/<run_id>/stream")
@require(*ANY_ROLE)
def stream(run_id: str) -> Response:
    """The run's events as server-sent events, until it ends (aurora/web/streaming.py)."""
    from .streaming import stream_response

    return stream_response(_runtime().db, run_id, _runtime().settings.node_name)


@bp.post("/workflows/<run_id>/cancel")
@require(Role.SUBMITTER)
def cancel(run_id: str) -> Response:
    runtime = _runtime()
    run_id = _run_id(run_id)
    with runtime.db.read() as session:
        current = run_views.detail(session, run_id, runtime.settings.node_name)
    if g.caller.role is not Role.ADMIN and current["submitted_by_person"] != g.caller.person:
        raise PermissionDenied("only the submitter of a run or an admin may cancel it")
    status = runtime.engine.cancel(run_id, g.caller.name)
    return jsonify({"id": run_id, "status": status})


@bp.post("/workflows/<run_id>/rerun")
@require(Role.SUBMITTER)
def rerun(run_id: str) -> tuple[Response, int, dict[str, str]]:
    """Run a workflow of several steps again, reusing the steps that succeeded (never one that
    acted live): from the step named in ``?from=``, or from what did not succeed."""
    runtime = _runtime()
    run_id = _run_id(run_id)
    with runtime.db.read() as session:
        current = run_views.detail(session, run_id, runtime.settings.node_name)
    # as for cancel: a rerun acts again with this submitter's document and inputs
    if g.caller.role is not Role.ADMIN and current["submitted_by_person"] != g.caller.person:
        raise PermissionDenied("only the submitter of a workflow or an admin may rerun it")
    from_step = request.args.get("from")
    run = flow_runs.rerun(runtime.engine, run_id, g.caller.name, g.caller.person, from_step)
    payload = {**run_views.summary(run), "rerun_of": run_id, "links": {"self": f"/workflows/{run.id}"}}
    if not enqueue(run.id):
        payload["warning"] = "stored, but the queue is unreachable; it will be sent again automatically"
    return jsonify(payload), 201, {"Location": f"/workflows/{run.id}"}


@bp.get("/events")
@require(*ANY_ROLE)
def event_log() -> Response:
    since = int_arg("since", 0, 0, 2**62)
    limit = int_arg("limit", 100, 1, 1000)
    with _runtime().db.read() as session:
        page = events.page(session, since=since, limit=limit, origin=request.args.get("origin"),
                           node=_runtime().settings.node_name)
        items = [events.as_dict(e) for e in page]
    return jsonify({"events": items, "last_seq": items[-1]["seq"] if items else since, "has_more": len(items) == limit})


def _vote(run_id: str, decision: str) -> Response:
    from .. import approvals

    body = request.get_json(silent=True) if request.data else {}
    if body is None or not isinstance(body, dict):
        raise BadParameter('send a JSON object such as {"request_hash": "<approval.hash>", "comment": "looks right"}')
    comment = body.get("comment")
    if comment is not None and not isinstance(comment, str):
        raise BadParameter("comment: must be a string")
    request_hash = body.get("request_hash")
    if request_hash is not None and not isinstance(request_hash, str):
        raise BadParameter("request_hash: must be a string (approval.hash of GET /workflows/<id>)")
    channel = "cli" if request.headers.get("X-Aurora-Channel") == "cli" else "api"
    return jsonify(approvals.vote(_runtime().engine, _run_id(run_id), g.caller, decision, comment, channel, request_hash))


@bp.post("/workflows/<run_id>/approve")
@require(Role.APPROVER)
def approve(run_id: str) -> Response:
    return _vote(run_id, "approve")


@bp.post("/workflows/<run_id>/reject")
@require(Role.APPROVER)
def reject(run_id: str) -> Response:
    return _vote(run_id, "reject")


@bp.get("/approvals")
@require(*ANY_ROLE)
def waiting() -> Response:
    from .. import approvals

    return jsonify({"waiting": approvals.waiting_for(_runtime().engine, g.caller)})


@bp.get("/me")
@require(*ANY_ROLE)
def me() -> Response:
    """Who the caller is: the person, their role, and the key used."""
    caller = g.caller
    return jsonify({"person": caller.person, "role": caller.role.value,
                    "key": {"id": caller.key_id, "name": caller.name}})

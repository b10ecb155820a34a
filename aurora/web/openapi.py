"""The API's contract: an OpenAPI 3.1 document (``GET /openapi.json``) and a page that shows it
(``GET /docs``). A test compares its paths with the app's routes; CI fuzzes the live app with
schemathesis against it."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template, request

from .. import __version__
from ..models import RunStatus

bp = Blueprint("openapi", __name__)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    meaning = {400: "Bad request", 401: "No or an invalid key", 403: "The key may not do this", 404: "Not found",
               405: "Method not allowed", 409: "The record's state forbids it", 413: "Body too large",
               415: "Unsupported content type", 422: "The workflow is invalid", 503: "Unhealthy"}
    return {str(code): _json(_ref("Error"), meaning[code]) for code in codes}


#: how long a request may ask to wait for its run (aurora/web/asgi.py)
WAIT_QUERY = {"name": "wait", "in": "query", "schema": {"type": "integer", "minimum": 0},
              "description": "seconds to wait (at most 60; more is cut to 60); see the operation"}
PREFER = {"name": "Prefer", "in": "header", "schema": {"type": "string", "examples": ["wait=30"]},
          "description": "RFC 7240: `wait=N` waits up to N seconds (at most 60) for the run to end or to wait "
                         "for approval (or be blocked), and answers with the run's summary, result and error "
                         "(status still queued or running after N s); `Preference-Applied: wait=N` says so. "
                         "The query `?wait=N` does the same."}
DEFINITION = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
AUTH = [{"bearerAuth": []}]
NONE: list[dict[str, list[str]]] = []
RUN_ID = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"},
          "description": "the run's id or a unique prefix of it, at least 6 characters (400 shorter, "
                         "409 ambiguous: the error's candidates name the runs it fits)"}
SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error", "message"], "properties": {
        "error": {"type": "string"}, "message": {"type": "string"},
        "component": {"enum": ["database", "disk", "broker"],
                      "description": "with error 'unavailable' (503): the part of the stack that failed"},
        "errors": {"type": "array", "items": {"type": "object", "required": ["path", "message"],
                                              "properties": {"path": {"type": "string"}, "message": {"type": "string"},
                                                             "line": {"type": "integer", "minimum": 1},
                                                             "column": {"type": "integer", "minimum": 1},
                                                             "hint": {"type": "string"}}}},
        "candidates": {"type": "array", "description": "with error 'ambiguous_run_id' (409): the runs the prefix fits",
                       "items": {"type": "object", "required": ["id"]}}}},
    "RunSummary": {"type": "object", "required": ["id", "name", "goal", "status", "mode", "mode_reason", "blocked",
                                                  "created_at"], "properties": {
        "id": {"type": "string"}, "name": {"type": "string"}, "goal": {"type": "string"},
        "status": {"enum": [status.value for status in RunStatus],
                   "description": "not_acted: a critical run the policy means to act live would only have been "
                                  "simulated; nothing was sent (error.type would_be_simulated says why, "
                                  "error.what_to_do what to do)"},
        "mode": {"enum": ["live", "simulated", None],
                 "description": "how the run acted: live, simulated, or null (not yet, or not at all)"},
        "mode_reason": {"type": ["string", "null"], "description": "why that mode (the policy switch, canary, …)"},
        "blocked": {"type": ["object", "null"], "description": "a queued run that cannot act now (secrets file "
                    "unsafe or unreadable, policy not loadable): component, message, what_to_do; retried"},
        "submitted_by": {"type": "string", "description": "the submitting key's name"},
        "submitted_by_person": {"type": "string", "description": "the person holding that key"},
        "created_at": {"type": "string"}, "updated_at": {"type": "string"},
        "finished_at": {"type": ["string", "null"]}}},
    "Run": {"allOf": [_ref("RunSummary"), {"type": "object", "required": ["document", "timeline", "approvals"],
                                           "properties": {
        "document": {"type": "object"}, "document_hash": {"type": "string"},
        "result": {"type": ["object", "null"]}, "error": {"type": ["object", "null"]},
        "settlement": {"type": ["string", "null"]}, "attempts": {"type": "integer"},
        "approval": {"oneOf": [{"type": "null"}, _ref("Approval")]},
        "approvals": {"type": "object", "required": ["required", "received", "missing", "votes"]},
        "steps": {"type": "array", "items": {"type": "object"}},
        "timeline": {"type": "array", "items": _ref("Event")}}}]},
    "Event": {"type": "object", "required": ["id", "seq", "origin", "type", "created_at", "data"], "properties": {
        "id": {"type": "string"}, "seq": {"type": "integer"}, "origin": {"type": "string"}, "type": {"type": "string"},
        "run_id": {"type": ["string", "null"]}, "created_at": {"type": "string"}, "data": {"type": "object"}}},
    "EventPage": {"type": "object", "required": ["events", "last_seq", "has_more"], "properties": {
        "node": {"type": "string"}, "events": {"type": "array", "items": _ref("Event")},
        "keys": {"type": "object", "description": "Introductions: other origins' public keys, signed by this node"},
        "last_seq": {"type": "integer"}, "has_more": {"type": "boolean"}}},
    "Approval": {"type": "object", "description": "What approvers approve: the exact request the adapter will "
                 "send (credentials redacted) in plain words and in full, and whether it is live and why. Votes "
                 "are bound to its hash.",
                 "required": ["plain", "mode", "live", "reason", "request", "hash"], "properties": {
        "plain": {"type": "array", "items": {"type": "object", "required": ["label", "value"], "properties": {
            "label": {"type": "string"}, "value": {"type": "string"}}}},
        "mode": {"enum": ["live", "simulated"]}, "live": {"type": "boolean"}, "reason": {"type": "string"},
        "adapter": {"type": "string"}, "operation": {"type": "string"},
        "request": {"type": "object"},
        "facts": {"type": "object", "description": "what decides who acts or on what beyond the request: the "
                  "credential's fingerprint (never the secret), a charge's resolved payment method"},
        "hash": {"type": "string"}}},
    "Me": {"type": "object", "required": ["person", "role", "key"], "properties": {
        "person": {"type": "string"}, "role": {"enum": ["admin", "submitter", "approver", "viewer"]},
        "key": {"type": "object", "required": ["id", "name"], "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}}}}},
    "Vote": {"type": "object", "required": ["id", "status", "gate"], "properties": {
        "id": {"type": "string"}, "status": {"type": "string"}, "gate": {"type": "object"}}},
    "Decision": {"type": "object", "required": ["target", "text_preview", "score", "hits", "rules_version", "reason"],
                 "properties": {"target": {"type": "string"}, "text_preview": {"type": "string"},
                                "score": {"type": "number"}, "hits": {"type": "array", "items": {"type": "object"}},
                                "runner_up": {"type": ["string", "null"]}, "runner_up_score": {"type": "number"},
                                "rules_version": {"type": "string"}, "reason": {"type": "string"},
                                "ranking": {"type": "array", "items": {"type": "string"}}}},
    "Health": {"type": "object", "required": ["status", "node", "version", "components"], "properties": {
        "status": {"enum": ["ok", "degraded", "down"]}, "node": {"type": "string"}, "version": {"type": "string"},
        "last_event_seq": {"type": ["integer", "null"]}, "server_time": {"type": "string"},
        "components": {"type": "object"}}},
    "Ready": {"type": "object", "required": ["status", "components"], "properties": {
        "status": {"enum": ["ready", "not_ready"]},
        "failing": {"type": "array", "items": {"enum": ["database", "broker", "disk", "workers"]}},
        "components": {"type": "object"}}},
    "Received": {"type": "object", "required": ["received"], "properties": {"received": {"type": "boolean"}}},
}


def _vote(decision: str) -> dict[str, Any]:
    return {"post": {
        "summary": f"{decision.capitalize()} a waiting run (approver or admin; never your own run, from any key "
                   "of your person; a person votes once)",
        "security": AUTH, "parameters": [RUN_ID],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["request_hash"],
            "properties": {"comment": {"type": "string", "maxLength": 2000},
                           "request_hash": {"type": "string", "description":
                               "approval.hash as you saw it (required: 400 without it; 409 if the request or "
                               "its mode changed since: look again)"}}}}}},
        "responses": {"200": _json(_ref("Vote"), "The vote and the gate after it"),
                      **_errors(400, 401, 403, 404, 409, 415)}}}


def _webhook(provider: str, header: str | None, deferrable: bool = False) -> dict[str, Any]:
    parameters = [{"name": header, "in": "header", "required": False, "schema": {"type": "string"}}] if header else []
    responses = {"200": _json(_ref("Received"), "Taken in (or a retry of one taken before)"),
                 **_errors(400, 401, 403, 413)}
    if deferrable:  # a genuine event the provider could not be asked about: it delivers it again
        responses["503"] = _json(_ref("Error"), "Not applied now (the provider could not be asked); nothing stored")
    return {"post": {
        "summary": f"{provider} callback, proven by its signature (no API key)", "security": NONE,
        "parameters": parameters,
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
        "responses": responses}}


EXAMPLE_WORKFLOW = {"name": "send_report", "category": "business", "origin": "claude", "type": "task",
                    "goal": "send_email", "payload": {"to": "kunde@example.com", "subject": "Monatsbericht",
                                                      "template": "monthly_report"}}
EXAMPLE_FLOW = {"document": {
    "name": "research_report", "inputs": {"customer_email": {"type": "string", "format": "email"}},
    "steps": [{"id": "research", "goal": "analyse", "payload": {"text": "Recherchiere aktuelle Studien über Hufrehe"}},
              {"id": "report", "goal": "send_email", "needs": ["research"],
               "payload": {"to": "{{ inputs.customer_email }}", "subject": "Ihre Recherche",
                           "text": "{{ steps.research.output.text }}"}}]},
    "inputs": {"customer_email": "kunde@example.com"}}
RUN_LINKS = {name: {"operationId": op, "parameters": {"run_id": "$response.body#/id"}}
             for name, op in (("GetRun", "getRun"), ("CancelRun", "cancelRun"), ("ApproveRun", "approveRun"),
                              ("RejectRun", "rejectRun"))}


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "Makes a retry safe (draft-ietf-httpapi-idempotency-key-header): the same key from the same "
                   "owner with the same workflow answers the run the first request made (200, "
                   "Idempotent-Replayed: true); with another workflow it is a 422. Kept 24 hours. Printable "
                   "ASCII, at most 255 characters, bare or as a quoted string; a UUID is ideal.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ !#-\\[\\]-~]+$"}}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again",
                               "schema": {"type": "integer", "minimum": 1}}}
UNAVAILABLE = {"503": {**_json(_ref("Error"), "The database, the disk or the broker is unavailable "
                                              "(error 'unavailable', with the component): try again later"),
                       "headers": RETRY_AFTER}}
#: paths that touch neither the database nor the broker
NO_BACKEND = {"/", "/openapi.json", "/docs", "/health", "/health/live", "/health/ready", "/schemas/workflow.json"}
#: the media type of a JSON Schema (draft 2020-12, section 14.1)
SCHEMA_JSON = "application/schema+json"


def _with_unavailable(spec: dict[str, Any]) -> dict[str, Any]:
    """Every operation that reaches the database may answer 503 when it is down (see web/unavailable.py)."""
    for path, item in spec["paths"].items():
        if path not in NO_BACKEND:
            for operation in item.values():
                operation["responses"].update(UNAVAILABLE)
    return spec


def _with_ids(spec: dict[str, Any]) -> dict[str, Any]:
    ids = {("/workflows", "post"): "submitWorkflow", ("/workflows/{run_id}", "get"): "getRun",
           ("/workflows/{run_id}/cancel", "post"): "cancelRun", ("/workflows/{run_id}/approve", "post"): "approveRun",
           ("/workflows/{run_id}/reject", "post"): "rejectRun"}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            operation["operationId"] = ids.get((path, method)) or (
                method + "".join(part.strip("{}").replace(".", "_").title() for part in path.split("/")))
    return spec


def document() -> dict[str, Any]:
    return _with_unavailable(_with_ids({
        "openapi": "3.1.0",
        "info": {"title": "Aurora", "version": __version__,
                 "description": "Submit, run and watch workflows; nothing expensive or public happens by accident."},
        "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}, "schemas": SCHEMAS},
        "security": AUTH,
        "paths": {
            "/": {"get": {"summary": "Redirects to the approval page, /ui/", "security": NONE, "responses": {
                "302": {"description": "To /ui/", "headers": {"Location": {"schema": {"type": "string"}}}}}}},
            "/health": {"get": {"summary": "Health per component", "security": NONE, "responses": {
                "200": _json(_ref("Health"), "ok, or degraded (no worker or beat, a refused policy edit, the secrets file unusable, a peer down)"),
                "503": _json(_ref("Health"), "Down: the database, the broker or the disk fails")}}},
            "/health/live": {"get": {"summary": "Liveness: the process answers (checks nothing else)", "security": NONE,
                                     "responses": {"200": _json({"type": "object", "required": ["status"]}, "Alive")}}},
            "/health/ready": {"get": {"summary": "Readiness: database writable, broker writable, disk has room, a worker "
                                                 "alive", "security": NONE, "responses": {
                "200": _json(_ref("Ready"), "Ready"),
                "503": {**_json(_ref("Ready"), "Not ready: the failing components"), "headers": RETRY_AFTER}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
                "200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
                **_errors(401)}}},
            "/openapi.json": {"get": {"summary": "This document", "security": NONE,
                                      "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")}}},
            "/docs": {"get": {"summary": "This document as a page", "security": NONE, "responses": {
                "200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}}},
            "/schemas/workflow.json": {"get": {
                "summary": "The workflow JSON Schema, for editors: its $id is this URL (docs/workflows.md, "
                           "`# yaml-language-server: $schema=…`)", "security": NONE, "responses": {
                    "200": {"description": "JSON Schema 2020-12", "content": {SCHEMA_JSON: {"schema": {
                        "type": "object", "required": ["$schema", "$id"]}}}}}}},
            "/workflows": {
                "post": {"summary": "Submit a workflow (YAML, JSON or a multipart file); optionally wait for it",
                         "description": "With `Prefer: wait=N` or `?wait=N` the answer comes when the run is "
                                        "final, waits for approval or is blocked, or after N seconds with the run "
                                        "as it is then (status still queued or running). The waiting costs the "
                                        "server no thread and no database connection.",
                         "parameters": [IDEMPOTENCY_KEY, PREFER, WAIT_QUERY], "requestBody": {
                    "required": True, "content": {
                        "application/yaml": {"schema": {"type": "string"}},
                        "application/json": {"schema": {"oneOf": [
                            {"type": "object", "description": "The workflow document itself",
                             "not": {"required": ["document"]}},
                            {"type": "object", "description": "A workflow of several steps with its inputs: the "
                             "document (an object, or its YAML or JSON text) and the values of its inputs:",
                             "required": ["document"], "additionalProperties": False, "properties": {
                                 "document": {"oneOf": [{"type": "object"}, {"type": "string"}]},
                                 "inputs": {"type": "object", "additionalProperties": {
                                     "type": ["string", "number", "integer", "boolean"]}}}}]},
                            "examples": {"task": {"value": EXAMPLE_WORKFLOW}, "steps": {"value": EXAMPLE_FLOW}}},
                        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                            "file": {"type": "string", "contentEncoding": "binary"},
                            "inputs": {"type": "string", "description": "The inputs, as a JSON object"}}}}}},
                    "responses": {"201": {**_json({"anyOf": [_ref("RunSummary"), _ref("Run")]},
                                                  "Stored and queued (with a wait: the run's summary, result and error)"),
                                          "headers": {"Preference-Applied": {"schema": {"type": "string"},
                                                      "description": "wait=N: the wait asked for was honoured"},
                                                      "Location": {"schema": {"type": "string"}}},
                                          "links": RUN_LINKS},
                                  "200": {**_json(_ref("RunSummary"), "A retry with the same Idempotency-Key: the "
                                                                      "run the first request made"),
                                          "headers": {"Idempotent-Replayed": {"schema": {"const": "true"}}},
                                          "links": RUN_LINKS},
                                  **_errors(400, 401, 403, 413, 415, 422)}},
                "get": {"summary": "List runs, newest first", "parameters": [
                    {"name": "status", "in": "query", "schema": {"type": "string"}},
                    {"name": "goal", "in": "query", "schema": {"type": "string"}},
                    {"name": "name", "in": "query", "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": _json({"type": "object", "required": ["runs", "next_cursor"], "properties": {
                        "runs": {"type": "array", "items": _ref("RunSummary")},
                        "next_cursor": {"type": ["string", "null"]}}}, "A page of runs"), **_errors(400, 401)}},
            },
            "/workflows/{run_id}": {"get": {"summary": "One run with its document, result and timeline",
                                            "description": "With `?wait=N`: a long poll. The answer comes when "
                                                           "the run differs from the version named in "
                                                           "`If-None-Match` (the `ETag` of an earlier answer; "
                                                           "without it, the run as it was when the request "
                                                           "arrived), at once for a final run, or after N "
                                                           "seconds (at most 60) unchanged.",
                                            "parameters": [RUN_ID, WAIT_QUERY, {
                                                "name": "If-None-Match", "in": "header",
                                                "schema": {"type": "string"},
                                                "description": "with ?wait: the ETag of the version already seen"}],
                                            "responses": {
                "200": {**_json(_ref("Run"), "The run"), "headers": {"ETag": {
                    "schema": {"type": "string"}, "description": "with ?wait: the run's version"}}},
                **_errors(400, 401, 404, 409)}}},
            "/workflows/{run_id}/stream": {"get": {
                "summary": "The run's events as server-sent events, as they happen, until the run is final",
                "description": "Each event: `id:` its seq, `event:` its type (run.queued, run.running, "
                               "run.succeeded, …), `data:` the event as GET /events shows it; after the final "
                               "status, `event: end` with the id and status, and the stream closes. A comment "
                               "line is sent every 15 s while nothing happens. A client that reconnects sends "
                               "`Last-Event-ID` (or `?after=seq`) and gets only what came after.",
                "parameters": [RUN_ID, {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                               {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "text/event-stream", "content": {
                    "text/event-stream": {"schema": {"type": "object", "description": "one event", "properties": {
                        "id": {"type": "string"}, "event": {"type": "string"},
                        "data": {"type": "string", "description": "JSON"}}}}}}, **_errors(400, 401, 404)}}},
            "/workflows/{run_id}/cancel": {"post": {"summary": "Cancel a run before it acts (its submitter or admin)",
                                                    "parameters": [RUN_ID], "responses": {
                "200": _json({"type": "object", "required": ["id", "status"]}, "Cancelled"),
                **_errors(400, 401, 403, 404, 409)}}},
            "/workflows/{run_id}/rerun": {"post": {
                "summary": "Run a workflow of several steps again, reusing the steps that succeeded (a step that "
                           "acted live, may have, or is still acting is never run again: 409); only its "
                           "submitter or an admin (403)",
                "parameters": [RUN_ID, {"name": "from", "in": "query", "required": False, "schema": {"type": "string"},
                                        "description": "Run this step and every step after it again"}],
                "responses": {"201": _json(_ref("RunSummary"), "The new run"), **_errors(400, 401, 403, 404, 409)}}},
            "/workflows/{run_id}/approve": _vote("approve"),
            "/workflows/{run_id}/reject": _vote("reject"),
            "/approvals": {"get": {"summary": "Runs waiting for the caller's vote, with what each would send",
                                   "responses": {
                "200": _json({"type": "object", "required": ["waiting"], "properties": {
                    "waiting": {"type": "array", "items": {"type": "object", "properties": {
                        "approval": {"oneOf": [{"type": "null"}, _ref("Approval")]}}}}}}, "Waiting runs"),
                **_errors(401)}}},
            "/me": {"get": {"summary": "Who the caller is: person, role and key", "responses": {
                "200": _json(_ref("Me"), "The caller"), **_errors(401)}}},
            "/events": {"get": {"summary": "The event log in seq order", "parameters": [
                {"name": "since", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                {"name": "origin", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": _json(_ref("EventPage"), "A page of events"), **_errors(400, 401)}}},
            "/route": {"post": {"summary": "Which AI engine a text goes to, and why", "requestBody": {
                "required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
                    "example": {"text": "Recherchiere aktuelle Studien zu PBM"}}}},
                "responses": {"200": _json(_ref("Decision"), "The decision"), **_errors(401, 413, 422)}}},
            "/route/rules": {"get": {"summary": "The routing rules in force", "responses": {
                "200": _json({"type": "object", "required": ["enabled", "default_engine", "rules"]}, "Rules"),
                **_errors(401)}}},
            "/federation/events": {"get": {"summary": "Origin-signed events for a peer (Bearer peer token; "
                                                      "?token= is deprecated: answered with a Deprecation header)",
                                           "parameters": [
                {"name": "since", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                {"name": "token", "in": "query", "deprecated": True, "schema": {"type": "string"}}],
                "responses": {"200": _json(_ref("EventPage"), "A page of events"), **_errors(400, 401, 403)}}},
            "/federation/nodes": {"get": {"summary": "The peers this node pulls from (admin key or peer token)",
                                          "responses": {
                "200": _json({"type": "object", "required": ["node", "nodes"]}, "Peers"), **_errors(401, 403)}}},
            "/definitions": {"get": {"summary": "Stored workflow definitions: version, triggers, next start, last runs",
                                     "responses": {"200": _json({"type": "object", "required": ["definitions"]},
                                                                "The definitions"), **_errors(401)}}},
            "/definitions/{name}": {
                "get": {"summary": "One definition: its workflow, triggers and next firing",
                        "parameters": [DEFINITION, {"name": "version", "in": "query",
                                                    "schema": {"type": "integer", "minimum": 0}}],
                        "responses": {"200": _json({"type": "object"}, "The definition"), **_errors(400, 401, 404)}},
                "put": {"summary": "Store a definition (admin): changed content makes a new version, the same none",
                        "parameters": [DEFINITION], "requestBody": {"required": True, "content": {
                            "application/yaml": {"schema": {"type": "string"}},
                            "application/json": {"schema": {"type": "object"}}}},
                        "responses": {"201": _json({"type": "object"}, "Its first version"),
                                      "200": _json({"type": "object"}, "A new version, or unchanged"),
                                      **_errors(400, 401, 403, 413, 422)}}},
            "/definitions/{name}/history": {"get": {"summary": "Every version of a definition",
                                                    "parameters": [DEFINITION], "responses": {
                "200": _json({"type": "object", "required": ["versions"]}, "Its versions"), **_errors(401, 404)}}},
            "/definitions/{name}/{switch}": {"post": {
                "summary": "enable, disable, or secret: make or rotate the webhook secret, shown once (admin)",
                "parameters": [DEFINITION, {"name": "switch", "in": "path", "required": True,
                                            "schema": {"enum": ["enable", "disable", "secret"]}}],
                "responses": {"200": _json({"type": "object"}, "Done"), **_errors(401, 403, 404, 409)}}},
            "/definitions/{name}/runs": {"post": {
                "summary": "Start a run of the definition's current version (submitter)",
                "parameters": [DEFINITION], "requestBody": {"required": False, "content": {"application/json": {
                    "schema": {"type": "object", "properties": {"inputs": {"type": "object"}}}}}},
                "responses": {"201": _json(_ref("RunSummary"), "Started"), **_errors(400, 401, 403, 404, 409, 422)}}},
            "/hooks/{name}": {"post": {
                "summary": "A definition's webhook trigger, signed with Standard Webhooks (no API key)",
                "security": NONE, "parameters": [DEFINITION] + [
                    {"name": h, "in": "header", "required": False, "schema": {"type": "string"}}
                    for h in ("webhook-id", "webhook-timestamp", "webhook-signature")],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"201": _json(_ref("RunSummary"), "Started"),
                              **_errors(400, 401, 404, 409, 413, 422, 503)}}},
            "/federation/identity": {"get": {"summary": "This node's name, Ed25519 public key and fingerprint",
                                             "security": NONE, "responses": {
                "200": _json({"type": "object", "required": ["node", "public_key", "fingerprint"]}, "Identity")}}},
            "/federation/witness/{origin}": {"get": {
                "summary": "The newest audit checkpoint of a node held here as its witness (admin key or peer token)",
                "parameters": [{"name": "origin", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _json({"type": "object", "required": ["node", "origin", "checkpoint"]}, "Held"),
                              **_errors(401, 403)}}},
            "/webhooks/stripe": _webhook("Stripe", "Stripe-Signature", deferrable=True),
            "/webhooks/typeform": _webhook("Typeform", "Typeform-Signature"),
            "/webhooks/mailgun": _webhook("Mailgun", None),
        },
    }))


@bp.get("/openapi.json")
def spec() -> Response:
    return jsonify(document())


@bp.get("/schemas/workflow.json")
def workflow_schema() -> Response:
    """The schema submissions are checked against, with an ``$id`` that is the URL it was fetched
    from (the file's own ``$id`` is the default stack's, http://127.0.0.1:9292/…)."""
    from ..resources import load_schema

    schema = {**load_schema("workflow.schema.json"), "$id": request.url_root + "schemas/workflow.json"}
    return current_app.response_class(current_app.json.dumps(schema), mimetype=SCHEMA_JSON)


@bp.get("/docs")
def docs() -> str:
    return render_template("docs.html", spec=document())

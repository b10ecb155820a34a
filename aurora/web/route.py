"""The KI-router's HTTP face: ``POST /route`` and ``GET /route/rules``."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from ..errors import DocumentError, Problem
from ..router import Rules, route
from .auth import ANY_ROLE, require

bp = Blueprint("route", __name__)

MAX_TEXT = 20_000


def _rules() -> Rules:
    policy = current_app.extensions["aurora"].policies.current()
    return Rules.from_policy(policy.routing, policy.version)


@bp.post("/route")
@require(*ANY_ROLE)
def decide() -> Response:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise DocumentError([Problem("", 'send a JSON object such as {"text": "..."}')])
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DocumentError([Problem("text", "is required and must be a non-empty string")])
    if len(text) > MAX_TEXT:
        raise DocumentError([Problem("text", f"is longer than {MAX_TEXT} characters")])
    return jsonify(route(text, _rules()).as_dict())


@bp.get("/route/rules")
@require(*ANY_ROLE)
def rules() -> Response:
    current = _rules()
    return jsonify({
        "enabled": current.enabled,
        "default_engine": current.default_engine,
        "version": current.version,
        "rules": [
            {"engine": r.engine, "priority": r.priority, "threshold": r.threshold,
             "keywords": [{"word": k.word, "weight": k.weight} for k in r.keywords]}
            for r in current.rules
        ],
    })

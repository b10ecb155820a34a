"""Every error leaves as JSON with a code, a message and, where it helps, a list of problems."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from ..errors import (
    AuroraError,
    AuthError,
    Conflict,
    DocumentError,
    DocumentTooLarge,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from .unavailable import classify

log = logging.getLogger(__name__)

_STATUS = [
    (DocumentTooLarge, 413),
    (PermissionDenied, 403),
    (AuthError, 401),
    (NotFound, 404),
    (Conflict, 409),
]


def error_body(code: str, message: str, **extra: object) -> dict[str, object]:
    return {"error": code, "message": message, **extra}


def register(app: Flask) -> None:
    @app.errorhandler(AuroraError)
    def aurora_error(exc: AuroraError):  # type: ignore[no-untyped-def]
        status = getattr(exc, "http_status", None) or next((s for cls, s in _STATUS if isinstance(exc, cls)), 400)
        extra: dict[str, object] = dict(getattr(exc, "body_extra", {}))
        if isinstance(exc, DocumentError):
            extra["errors"] = [p.as_dict() for p in exc.problems]
            if status == 400 and exc.code == "invalid_workflow":
                status = 422
        if isinstance(exc, Unavailable):
            return _unavailable(exc)
        response = jsonify(error_body(exc.code, str(exc), **extra))
        response.status_code = status
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="aurora"'
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):  # type: ignore[no-untyped-def]
        code = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description or exc.name
        if exc.code == 413:
            message = "request body is larger than the configured limit (AURORA_MAX_DOCUMENT_BYTES)"
        response = jsonify(error_body(code, message))
        response.status_code = exc.code or 500
        if exc.code == 405 and hasattr(exc, "valid_methods") and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):  # type: ignore[no-untyped-def]
        down = classify(exc)
        if down is not None:
            # An outage, not a bug: one line per request, without the driver's text (hosts, paths).
            log.warning("%s unavailable: %s", down.component, exc.__class__.__name__)
            return _unavailable(down)
        log.exception("unhandled error")
        response = jsonify(error_body("internal_error", "an unexpected error occurred; it has been logged"))
        response.status_code = 500
        return response


def _unavailable(exc: Unavailable):  # type: ignore[no-untyped-def]
    response = jsonify(error_body(exc.code, str(exc), component=exc.component))
    response.status_code = 503
    response.headers["Retry-After"] = str(exc.retry_after)
    return response

"""The Flask application factory: one blueprint per surface, JSON everywhere."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported by create_app: gunicorn's master loads aurora.web.worker, never the app (~9 MB)
    from flask import Flask

#: room for multipart boundaries and headers around the largest accepted document
MULTIPART_OVERHEAD = 64 * 1024


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    from flask import Flask

    from ..config import load_settings
    from ..runtime import Runtime, get_runtime, set_runtime

    app = Flask(__name__)
    if test_config and "AURORA_ENV" in test_config:
        set_runtime(Runtime(load_settings(test_config["AURORA_ENV"])))
    runtime = get_runtime()
    runtime.policies.current()  # a broken policy stops start-up here, naming the key
    app.config.update(
        MAX_CONTENT_LENGTH=runtime.settings.max_document_bytes + MULTIPART_OVERHEAD,
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if test_config:
        app.config.update({k: v for k, v in test_config.items() if k != "AURORA_ENV"})
    app.extensions["aurora"] = runtime

    from .. import logs
    from . import api, definitions, errors, federation, health, openapi, route, ui, webhooks

    logs.configure(runtime.secret_values)
    _request_log(app)

    errors.register(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(route.bp)
    app.register_blueprint(federation.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(definitions.bp)
    app.register_blueprint(openapi.bp)
    ui.init_app(app, runtime.settings.home)
    # The JSON API authenticates every call with a bearer key, never a cookie: no CSRF there.
    for blueprint in (api.bp, route.bp, health.bp, federation.bp, webhooks.bp, openapi.bp, definitions.bp):
        ui.csrf.exempt(blueprint)
    return app


def _request_log(app: Flask) -> None:
    """One line per request: method, path (never the query string: it may hold a token), status,
    duration, and who asked."""
    import logging
    import time

    from flask import g, request

    log = logging.getLogger("aurora.request")
    from ..metrics import request_done

    @app.before_request
    def _start() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def _line(response):  # type: ignore[no-untyped-def]
        started = g.get("request_started")
        duration = round((time.perf_counter() - started) * 1000, 2) if started else None
        caller = g.get("caller")
        asked = request._get_current_object()  # type: ignore[attr-defined]  # once: each use of the proxy looks it up
        method, path, status = asked.method, asked.path, response.status_code
        try:
            request_done(method, asked.url_rule.rule if asked.url_rule else "unmatched", status, (duration or 0) / 1000)
        except Exception:  # noqa: BLE001 - counting a request must never fail it
            log.warning("could not count the request in the metrics", exc_info=True)
        log.info("%s %s %s", method, path, status, extra={
            "method": method, "path": path, "status": status,
            "duration_ms": duration, "caller": caller.name if caller else None})
        return response
